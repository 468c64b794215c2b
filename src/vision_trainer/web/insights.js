// A dataset's insights: Analyze runs the job and shows its progress, then the photos whose label the
// rest of the data contradicts (relabel as suggested or remove in one click), near-duplicate groups side
// by side, outliers, the class balance as a bar chart, and label suggestions for unlabelled photos.

import { ApiError, blobUrl, followEvents, getJson, postForm, sendJson } from "./api.js";
import { $, describe, make, percent, plural, setError, show } from "./ui.js";

const PHASES = {
  queued: "Waiting for a free worker",
  preparing: "Preparing",
  extracting: "Reading the photos' features",
  evaluating: "Looking for problems",
  done: "Done",
};
const KINDS = {
  same_class: "the same photo twice in one class: it counts double, keep one",
  cross_class: "the same photo under different labels: one of the labels is wrong",
  cross_split: "copies that would fall on both sides of the train/test split, so the test would see a photo "
    + "the model trained on; training keeps them together on one side",
};
const SHOWN = 12; // per list; the lists are ranked, the first are the most worth a look
const LISTING = 500; // photos per request when checking what changed since a stale analysis
const MAX_LISTED = 5000;

// From datasets.js: root (the view), path(suffix), id(), refresh(): read the dataset again (it calls load()).
let ctx = null;
const state = {
  datasetId: null,
  insights: null,
  done: new Map(), // image id -> what was done to it since the analysis shown ("relabelled as cat", "removed")
  thumbs: new Map(), // image id -> Promise of an object URL (a photo's pixels never change)
  running: null, // AbortController of the analysis being followed
};

const part = (selector) => $(selector, ctx.root);

/** Wire the panel inside the dataset view; `given` is described at `ctx`. */
export function initInsights(given) {
  ctx = given;
  part(".analyze-button").addEventListener("click", analyze);
}

/** Show the latest insights of the open dataset (after it opened or changed). */
export async function loadInsights() {
  const id = ctx.id();
  if (id !== state.datasetId) forget(id);
  let insights = null;
  try {
    insights = await getJson(ctx.path("/insights"));
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "no_insights")) {
      setError(part(".insights-error"), describe(error));
      return;
    }
  }
  if (ctx.id() !== id) return; // another dataset opened meanwhile
  if (insights?.job_id !== state.insights?.job_id) state.done.clear();
  if (insights?.stale) await markChanges(insights);
  if (ctx.id() !== id) return;
  state.insights = insights;
  render();
}

/** The photos of a stale analysis that were relabelled or removed since (by this page or elsewhere). */
async function markChanges(insights) {
  const given = new Map();
  for (const item of [...insights.suspect_labels, ...insights.outliers]) given.set(item.image_id, item.label);
  for (const item of insights.suggestions) given.set(item.image_id, null);
  for (const group of insights.near_duplicates) group.image_ids.forEach((id, i) => given.set(id, group.labels[i] ?? null));
  if (![...given.keys()].some((id) => !state.done.has(id))) return;
  const now = new Map();
  for (let offset = 0, count = 1; offset < count && offset < MAX_LISTED; offset += LISTING) {
    try {
      const page = await getJson(`${ctx.path("/images")}?limit=${LISTING}&offset=${offset}`);
      page.items.forEach((image) => now.set(image.image_id, image.label));
      count = page.count;
    } catch {
      return; // the marks are a courtesy; the insights still show
    }
  }
  for (const [id, label] of given) {
    if (state.done.has(id)) continue;
    if (!now.has(id)) state.done.set(id, "Removed");
    else if (now.get(id) !== label) state.done.set(id, now.get(id) === null ? "Now unlabelled" : `Now labelled ${now.get(id)}`);
  }
}

function forget(id) {
  state.running?.abort();
  state.running = null;
  state.thumbs.forEach((url) => url.then((u) => URL.revokeObjectURL(u), () => {}));
  state.thumbs.clear();
  state.done.clear();
  Object.assign(state, { datasetId: id, insights: null });
  show(part(".insights-progress"), false);
  part(".analyze-button").disabled = false;
  setError(part(".insights-error"), "");
}

// --- the job -----------------------------------------------------------------------------------------

async function analyze() {
  const button = part(".analyze-button");
  const id = ctx.id();
  button.disabled = true;
  setError(part(".insights-error"), "");
  const abort = new AbortController();
  state.running = abort;
  try {
    const job = await postForm(ctx.path("/analyze"), new FormData());
    showProgress({ phase: "queued", done: 0, total: 0 });
    const final = await followEvents(job.job_id, (kind, data) => kind === "progress" && showProgress(data), abort.signal);
    if (final.status !== "succeeded") throw new Error(final.error || `the analysis was ${final.status}`);
    if (ctx.id() === id) await loadInsights();
  } catch (error) {
    if (!abort.signal.aborted) setError(part(".insights-error"), `The analysis did not finish: ${describe(error)}`);
  } finally {
    if (state.running === abort) {
      state.running = null;
      button.disabled = false;
      show(part(".insights-progress"), false);
    }
  }
}

function showProgress(data) {
  const box = part(".insights-progress");
  show(box);
  const name = PHASES[data.phase] || data.phase;
  $(".insights-progress-text", box).textContent = data.total ? `${name}: ${data.done} / ${data.total}` : `${name}…`;
  const bar = $("progress", box);
  if (data.total) {
    bar.max = data.total;
    bar.value = Math.min(data.done, data.total);
  } else bar.removeAttribute("value"); // indeterminate until a phase counts
}

// --- the results -------------------------------------------------------------------------------------

function render() {
  const insights = state.insights;
  renderStatus(insights);
  show(part(".insights-body"), Boolean(insights));
  if (!insights) return;
  renderSuspects(insights.suspect_labels);
  renderDuplicates(insights.near_duplicates);
  renderOutliers(insights.outliers);
  renderBalance(insights.class_balance);
  renderSuggestions(insights.suggestions);
  renderCurve(insights.learning_curve);
}

const SVG = "http://www.w3.org/2000/svg";

function svgNode(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One small chart: measured points (solid) and, for the overall curve, the projection (dashed). */
function curveChart(title, measured, projected = []) {
  const width = 240, height = 150, left = 34, right = 10, top = 22, bottom = 24;
  const all = [...measured, ...projected];
  const maxX = Math.max(...all.map((p) => p.photos), 1);
  const values = all.map((p) => p.value);
  const low = Math.max(0, Math.floor((Math.min(...values) - 0.05) * 10) / 10);
  const x = (n) => left + (n / maxX) * (width - left - right);
  const y = (v) => top + (1 - (v - low) / Math.max(1e-6, 1 - low)) * (height - top - bottom);
  const svg = svgNode("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "curve-svg" });
  svg.append(svgNode("title", {}, `${title}: ${measured.map((p) => `${p.photos} photos ${p.value.toFixed(2)}`).join(", ")}`));
  svg.append(svgNode("text", { x: left, y: 14, class: "axis" }, title));
  for (const tick of [low, (low + 1) / 2, 1]) {
    svg.append(svgNode("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }));
    svg.append(svgNode("text", { x: left - 4, y: y(tick) + 4, class: "axis", "text-anchor": "end" }, tick.toFixed(2)));
  }
  svg.append(svgNode("text", { x: width - right, y: height - 6, class: "axis", "text-anchor": "end" }, `${maxX} photos`));
  const line = (points, className) => svgNode("polyline",
    { points: points.map((p) => `${x(p.photos).toFixed(1)},${y(p.value).toFixed(1)}`).join(" "), class: className });
  if (projected.length) svg.append(line([measured.at(-1), ...projected], "line-projection"));
  svg.append(line(measured, "line-test"));
  for (const p of measured) svg.append(svgNode("circle", { cx: x(p.photos), cy: y(p.value), r: 3, class: "line-test" }));
  return svg;
}

function renderCurve(curve) {
  const advice = part(".curve-advice");
  const charts = part(".curves");
  if (!curve) {
    advice.replaceChildren(make("li", { className: "muted", textContent: "Needs labelled photos of two classes or more." }));
    charts.replaceChildren();
    return;
  }
  advice.replaceChildren(...curve.advice.map((line) => make("li", { textContent: line })));
  const overall = curve.overall.map((p) => ({ photos: p.photos, value: p.accuracy }));
  const projected = curve.projection.map((p) => ({ photos: p.photos, value: p.accuracy }));
  charts.replaceChildren(curveChart("all classes: accuracy", overall, projected),
    ...Object.entries(curve.per_class).map(([label, points]) =>
      curveChart(`${label}: recall`, points.map((p) => ({ photos: p.photos, value: p.recall })))));
}

function renderStatus(insights) {
  const status = part(".insights-status");
  status.classList.toggle("stale", Boolean(insights?.stale));
  if (!insights) {
    status.textContent = "Not analyzed yet. Analyze checks every photo against the others: labels that look wrong, "
      + "near-duplicates, photos like no class, the balance of the classes and labels for unlabelled photos.";
    part(".analyze-button").textContent = "Analyze";
    return;
  }
  const when = new Date(insights.analyzed_at).toLocaleString();
  const cv = insights.cv_accuracy ? ` · cross-validated accuracy ${percent(insights.cv_accuracy.mean)}` : "";
  const about = `Version ${insights.dataset_version}, ${plural(insights.image_count, "photo")}, analyzed ${when} `
    + `in ${insights.seconds.toFixed(1)} s${cv}.`;
  status.textContent = insights.stale
    ? `Stale: the dataset changed since this analysis (version ${insights.dataset_version} → ${insights.current_version}). `
      + `Analyze again to update. ${about}`
    : about;
  part(".analyze-button").textContent = "Analyze again";
}

/** A list of up to SHOWN items made by `card`, or `empty` when there are none. */
function fill(selector, items, card, empty) {
  const list = part(selector);
  const cards = items.slice(0, SHOWN).map(card);
  if (items.length > SHOWN) cards.push(make("li", { className: "muted small more", textContent: `and ${items.length - SHOWN} more` }));
  list.replaceChildren(...(cards.length ? cards : [make("li", { className: "muted small empty", textContent: empty })]));
}

function thumb(imageId, alt) {
  const img = make("img", { alt, decoding: "async" });
  if (!state.thumbs.has(imageId)) state.thumbs.set(imageId, blobUrl(ctx.path(`/images/${imageId}`)));
  state.thumbs.get(imageId).then((url) => { img.src = url; }, () => img.classList.add("broken"));
  return img;
}

function finding(testid, item, lines) {
  const card = make("li", { className: "finding" }, { "data-testid": testid, "data-image-id": item.image_id });
  const text = make("div", { className: "finding-text" });
  text.append(make("span", { className: "filename", textContent: item.filename, title: item.filename }), ...lines);
  card.append(thumb(item.image_id, item.filename), text);
  const done = state.done.get(item.image_id);
  if (done) {
    card.classList.add("done");
    text.append(make("span", { className: "done-note", textContent: done }, { "data-testid": "finding-done" }));
  }
  return card;
}

function actions(card, ...buttons) {
  if (card.classList.contains("done")) return card;
  const row = make("div", { className: "finding-actions" });
  row.append(...buttons);
  card.append(row);
  return card;
}

function action(label, handler, attrs) {
  const node = make("button", { type: "button", textContent: label }, attrs);
  node.addEventListener("click", () => {
    node.disabled = true;
    handler().finally(() => { node.disabled = false; });
  });
  return node;
}

function renderSuspects(suspects) {
  fill(".suspects", suspects, (item) => {
    const change = make("span", { className: "change" });
    change.append(make("span", { className: "was", textContent: item.label }), " → ",
      make("strong", { textContent: item.suggested_label }));
    const card = finding("suspect", item, [change,
      make("span", { className: "muted small", textContent: `${percent(item.confidence)} sure it is ${item.suggested_label}` }),
      ...(item.score == null ? [] : [make("span", { className: "score small", textContent: `score ${item.score.toFixed(2)}` },
        { "data-testid": "suspect-score", title: "1 − the probability the rest of the data gives this label" })])]);
    return actions(card,
      action(`Relabel as ${item.suggested_label}`, () => relabel(item, item.suggested_label),
        { "data-testid": "suspect-relabel", "aria-label": `Relabel ${item.filename} as ${item.suggested_label}` }),
      action("Remove", () => removePhotos([item.image_id], item.filename),
        { "data-testid": "suspect-remove", "aria-label": `Remove ${item.filename}`, class: "danger" }));
  }, "None: every label agrees with the rest of the photos.");
}

function renderDuplicates(groups) {
  fill(".duplicates", groups, (group) => {
    const card = make("li", { className: `duplicate-group ${group.kind}` }, { "data-testid": "duplicate-group", "data-kind": group.kind });
    const photos = make("div", { className: "side-by-side" });
    group.image_ids.forEach((imageId, i) => {
      const figure = make("figure");
      const label = group.labels[i] ?? "unlabelled";
      const caption = make("figcaption");
      caption.append(make("strong", { textContent: label }), make("span", { className: "filename", textContent: group.filenames[i] }));
      figure.append(thumb(imageId, `${group.filenames[i]} (${label})`), caption);
      if (state.done.has(imageId)) {
        figure.className = "done";
        caption.append(make("span", { className: "done-note", textContent: state.done.get(imageId) }));
      }
      photos.append(figure);
    });
    const words = make("p", { className: "small" });
    words.append(make("strong", { textContent: `${(group.similarity * 100).toFixed(0)}\u00a0% alike: ` }), KINDS[group.kind] || group.kind);
    const extra = group.image_ids.slice(1);
    const copies = extra.length === 1 ? "1 copy" : `${extra.length} copies`;
    card.append(photos, words);
    if (!group.image_ids.some((id) => state.done.has(id))) {
      card.append(action(`Keep the first, remove ${copies}`, () => removePhotos(extra, copies), { "data-testid": "duplicate-remove" }));
    }
    return card;
  }, "None: no photo is a near copy of another.");
}

function renderOutliers(outliers) {
  fill(".outliers", outliers, (item) => {
    const card = finding("outlier", item, [
      make("span", { textContent: `labelled ${item.label ?? "—"}` }),
      make("span", { className: "muted small", textContent: `unlike the other photos (score ${item.score.toFixed(1)})` }),
    ]);
    return actions(card, action("Remove", () => removePhotos([item.image_id], item.filename),
      { "data-testid": "outlier-remove", "aria-label": `Remove ${item.filename}`, class: "danger" }));
  }, "None: every photo looks like one of the classes.");
}

function renderSuggestions(suggestions) {
  const sorted = [...suggestions].sort((a, b) => a.confidence - b.confidence);
  fill(".suggestions", sorted, (item) => {
    const card = finding("suggestion", item, [
      make("span", { className: "change", textContent: `→ ${item.suggested_label}` }),
      make("span", { className: "muted small", textContent: `${percent(item.confidence)} sure` }),
    ]);
    return actions(card, action(`Label as ${item.suggested_label}`, () => relabel(item, item.suggested_label),
      { "data-testid": "suggestion-accept", "aria-label": `Label ${item.filename} as ${item.suggested_label}` }));
  }, "No unlabelled photos: add some without a class and analyze to get labels suggested.");
}

// --- class balance -----------------------------------------------------------------------------------

/** One bar per class (CSS, so it reads as well on a phone), with the recommended count as a dashed line. */
function balanceChart(counts, recommended) {
  const entries = Object.entries(counts);
  const most = Math.max(1, recommended || 0, ...entries.map(([, n]) => n));
  const largest = Math.max(...entries.map(([, n]) => n));
  const chart = make("div", { className: "balance-bars" }, { role: "list", "aria-label": "Labelled photos per class" });
  for (const [name, n] of entries) {
    const low = n < (recommended || 0) || n < largest / 2;
    const row = make("div", { className: low ? "balance-row low" : "balance-row" },
      { role: "listitem", "data-testid": "balance-bar", "data-label": name, "data-count": n });
    const track = make("span", { className: "balance-track" });
    const fill = make("span", { className: "balance-fill" });
    fill.style.width = `${((n / most) * 100).toFixed(1)}%`;
    track.append(fill);
    if (recommended) {
      const line = make("span", { className: "balance-recommended" });
      line.style.left = `${((recommended / most) * 100).toFixed(1)}%`;
      track.append(line);
    }
    row.append(make("span", { className: "balance-label", textContent: name, title: name }), track,
      make("span", { className: "balance-count", textContent: n }));
    chart.append(row);
  }
  return chart;
}

function renderBalance(balance) {
  const box = part(".balance");
  const counts = balance?.counts || {};
  if (!Object.keys(counts).length) {
    box.replaceChildren(make("p", { className: "muted small", textContent: "No labelled photos." }));
    return;
  }
  const warnings = make("ul", { className: "warnings" }, { "data-testid": "balance-warnings" });
  warnings.append(...(balance.warnings || []).map((w) => make("li", { className: "warning", textContent: capital(w.message) },
    { "data-code": w.code })));
  const recommended = balance.recommended_per_class;
  const note = make("p", { className: "muted small balance-note", textContent: (recommended
    ? `Dashed line: the ${recommended} photos per class recommended. ` : "")
    + "Orange: fewer than that, or less than half the largest class." });
  box.replaceChildren(balanceChart(counts, recommended), note, warnings);
}

const capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);

// --- acting on a finding -----------------------------------------------------------------------------

async function relabel(item, label) {
  try {
    const answer = await sendJson(ctx.path("/images"), "PATCH", { image_ids: [item.image_id], label });
    state.done.set(item.image_id, `Relabelled as ${label}`);
    setError(part(".insights-error"), "");
    part(".insights-action").textContent = `${item.filename} is now ${label} · version ${answer.version}`;
    await ctx.refresh();
  } catch (error) {
    setError(part(".insights-error"), describe(error));
  }
}

async function removePhotos(imageIds, what) {
  if (!confirm(`Remove ${what} from the dataset? Models already trained keep their results.`)) return;
  try {
    const answer = await sendJson(ctx.path("/images"), "DELETE", { image_ids: imageIds });
    imageIds.forEach((id) => state.done.set(id, "Removed"));
    setError(part(".insights-error"), "");
    part(".insights-action").textContent = `Removed ${what} · version ${answer.version}`;
    await ctx.refresh();
  } catch (error) {
    setError(part(".insights-error"), describe(error));
  }
}
