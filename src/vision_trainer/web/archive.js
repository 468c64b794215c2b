// Photos out of a zip, tar or tar.gz dropped on one class: the API reads archives of class folders,
// so an archive meant for a single class is unpacked here and its photos sent as that class's files.
// Nothing from inside an archive becomes more than a File's name; hidden entries and non-images are
// left out and listed.

const IMAGE = /\.(jpe?g|png|gif|bmp|webp|tiff?)$/i;
const MAX_ENTRIES = 10_000;
const MAX_BYTES = 2 ** 30;

export function isArchive(file) {
  return /\.(zip|tar|tgz|tar\.gz)$/i.test(file.name);
}

function hidden(path) {
  return path.split("/").some((part) => part.startsWith(".") || part === "__MACOSX");
}

function keep(path, skipped) {
  if (!path || path.endsWith("/")) return false;
  if (hidden(path)) skipped.push(`${path} (hidden)`);
  else if (!IMAGE.test(path)) skipped.push(`${path} (not a photo)`);
  else return true;
  return false;
}

const basename = (path) => path.split("/").pop();

async function inflate(bytes, format) {
  return new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream(format))).arrayBuffer();
}

async function readZip(buffer, skipped) {
  const view = new DataView(buffer);
  let end = -1;
  for (let i = buffer.byteLength - 22; i >= Math.max(0, buffer.byteLength - 65_557); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { end = i; break; }
  }
  if (end < 0) throw new Error("this zip file has no table of contents (damaged or not a zip)");
  const count = view.getUint16(end + 10, true);
  if (count > MAX_ENTRIES) throw new Error(`this archive has ${count} entries; at most ${MAX_ENTRIES} are read`);
  let at = view.getUint32(end + 16, true);
  const files = [];
  let total = 0;
  for (let n = 0; n < count; n++) {
    if (view.getUint32(at, true) !== 0x02014b50) throw new Error("this zip file is damaged");
    const flags = view.getUint16(at + 8, true), method = view.getUint16(at + 10, true);
    const size = view.getUint32(at + 20, true), nameLength = view.getUint16(at + 28, true);
    const local = view.getUint32(at + 42, true);
    const path = new TextDecoder().decode(new Uint8Array(buffer, at + 46, nameLength));
    at += 46 + nameLength + view.getUint16(at + 30, true) + view.getUint16(at + 32, true);
    if (!keep(path, skipped)) continue;
    if (flags & 1 || ![0, 8].includes(method)) { skipped.push(`${path} (encrypted or compressed in an unusual way)`); continue; }
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const data = new Uint8Array(buffer, start, size);
    const bytes = method === 8 ? await inflate(data, "deflate-raw") : data;
    total += bytes.byteLength;
    if (total > MAX_BYTES) throw new Error("this archive unpacks to more than 1 GiB");
    files.push(new File([bytes], basename(path)));
  }
  return files;
}

function readTar(buffer, skipped) {
  const text = (offset, length) => new TextDecoder().decode(new Uint8Array(buffer, offset, length)).replace(/\0.*$/s, "");
  const files = [];
  for (let at = 0; at + 512 <= buffer.byteLength && files.length + skipped.length < MAX_ENTRIES;) {
    const name = text(at, 100);
    if (!name) break; // the two empty blocks that end an archive
    const size = parseInt(text(at + 124, 12).trim() || "0", 8);
    const type = text(at + 156, 1) || "0";
    const prefix = text(at + 257, 6).startsWith("ustar") ? text(at + 345, 155) : "";
    const path = prefix ? `${prefix}/${name}` : name;
    if (type === "0" && keep(path, skipped)) files.push(new File([buffer.slice(at + 512, at + 512 + size)], basename(path)));
    else if (!["0", "5", "x", "g"].includes(type)) skipped.push(`${path} (a link or special file)`);
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** The photos inside `file` (zip, tar, tar.gz) as Files, and the entries left out. */
export async function unpack(file) {
  const skipped = [];
  let buffer = await file.arrayBuffer();
  const head = new Uint8Array(buffer, 0, Math.min(4, buffer.byteLength));
  if (head[0] === 0x50 && head[1] === 0x4b) return { files: await readZip(buffer, skipped), skipped };
  if (head[0] === 0x1f && head[1] === 0x8b) buffer = await inflate(buffer, "gzip");
  if (buffer.byteLength > MAX_BYTES) throw new Error("this archive unpacks to more than 1 GiB");
  return { files: readTar(buffer, skipped), skipped };
}
