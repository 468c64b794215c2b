// The JSON API, as the page uses it: one fetch wrapper that adds the API key (asked once, kept for
// the tab in sessionStorage), turns error bodies into ApiError, and reads Server-Sent Events.

const KEY_STORE = "vision-trainer-api-key";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || "http_error";
    this.errors = body?.errors || [];
  }
}

let askUser = async () => null;
let pendingKey = null;

/** How the page asks the user for a key when the server answers 401. */
export function onKeyNeeded(ask) {
  askUser = ask;
}

/** One prompt however many requests were refused at once; they all retry with its answer. */
function askForKey() {
  pendingKey ??= askUser().finally(() => { pendingKey = null; });
  return pendingKey;
}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function send(path, options = {}, retried = false) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401 && !retried) {
    const key = await askForKey();
    if (key) {
      sessionStorage.setItem(KEY_STORE, key);
      return send(path, options, true);
    }
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = { detail: `${response.status} ${response.statusText}` };
    }
    if (response.status === 401) sessionStorage.removeItem(KEY_STORE);
    throw new ApiError(response.status, body);
  }
  return response;
}

export async function getJson(path) {
  return (await send(path)).json();
}

export async function postForm(path, form) {
  return (await send(path, { method: "POST", body: form })).json();
}

export async function sendJson(path, method, body) {
  const response = await send(path, {
    method,
    body: JSON.stringify(body),
    headers: { "Content-Type": "application/json" },
  });
  return response.status === 204 ? null : response.json();
}

export async function remove(path) {
  await send(path, { method: "DELETE" });
}

export async function post(path) {
  return (await send(path, { method: "POST" })).json();
}

/** An object URL for a protected file (images, downloads): <img src> cannot send the key. */
export async function blobUrl(path) {
  const blob = await (await send(path)).blob();
  return URL.createObjectURL(blob);
}

/** Save a protected file under `filename`. */
export async function download(path, filename) {
  saveBlob(await (await send(path)).blob(), filename);
}

/** Offer a blob as a download named `filename`. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A successful response (any 2xx, e.g. 202 with a job) with the API key sent; ApiError otherwise. */
export async function fetchOk(path) {
  return send(path);
}

/**
 * Follow a job's Server-Sent Events (read with fetch, so the API key travels in a header).
 * Calls onEvent(kind, data) for each event; resolves after the final `status` event.
 * Reconnects with Last-Event-ID when the connection drops or the server ends the stream early (it
 * does so when a tab falls too far behind), and waits when the server has too many streams open.
 */
export async function followEvents(jobId, onEvent, signal) {
  let lastId = "0";
  for (let attempt = 0; attempt < 20 && !signal?.aborted; attempt++) {
    let pause = 1000;
    try {
      const response = await send(`/jobs/${jobId}/events`, { headers: { "Last-Event-ID": lastId }, signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { kind: "message", data: "" };
          for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon <= 0) continue;
            const field = line.slice(0, colon);
            const text = line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") event.kind = text;
            else if (field === "data") event.data += text;
            else if (field === "id") lastId = text;
          }
          if (!event.data) continue;
          const data = JSON.parse(event.data);
          onEvent(event.kind, data);
          if (event.kind === "status") return data;
        }
      }
    } catch (error) {
      const busy = error instanceof ApiError && error.code === "too_many_streams";
      if ((error instanceof ApiError && !busy) || signal?.aborted) throw error;
      if (busy) pause = 5000;
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
  throw new Error("lost the connection to the job's events");
}
