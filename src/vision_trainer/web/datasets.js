// Datasets kept on the server: the list (create, open, delete) and one dataset's view: classes with
// counts, paged photos with their filenames, photos or archives added per class or to the dataset,
// photos selected to relabel or delete, training on it, and its models side by side.

import { blobUrl, getJson, postForm, remove, sendJson } from "./api.js";
import { ciText, cvText, modelDetail, roughWarning } from "./accuracy.js";
import { isArchive, unpack } from "./archive.js";
import { initInsights, loadInsights } from "./insights.js";
import { placeTrainOptions } from "./options.js";
import { $, $$, describe, make, onDrop, percent, plural, setError, show } from "./ui.js";

const PAGE_SIZE = 24;
const PHOTOS_OR_ARCHIVES = "image/*,.zip,.tar,.gz,.tgz";
const SHOWN_MODELS = 6;

// From the page: follow(jobId, epochs, target), cancel(), leave(home): the job view goes back to the
// main form, showModel(modelId), listed(datasets), compare(modelIds, datasetId).
let hooks = null;
const view = {
  root: null,
  dataset: null,
  label: undefined, // the class shown; null = the unlabelled photos
  offset: 0,
  count: 0,
  images: [],
  selected: new Set(),
  urls: [],
  generation: 0, // of the shown photos: thumbnails that arrive for an older page are dropped
};

const part = (selector) => $(selector, view.root);
const datasetPath = (suffix = "") => `/datasets/${view.dataset.dataset_id}${suffix}`;
const className = (label) => label ?? "Unlabelled";

function setStatus(text) {
  part(".dataset-status").textContent = text;
}

function setViewError(message) {
  setError(part(".dataset-error"), message);
}

function listed(names, limit = 5) {
  const shown = names.slice(0, limit).join(", ");
  return names.length > limit ? `${shown} and ${names.length - limit} more` : shown;
}

// --- the list ----------------------------------------------------------------------------------------

export async function loadDatasets() {
  setError($("#datasets-error"), "");
  try {
    const listing = await getJson("/datasets?limit=100");
    renderDatasets(listing.items);
    hooks.listed(listing.items);
  } catch (error) {
    setError($("#datasets-error"), describe(error));
  }
}

function summary(dataset) {
  const classes = dataset.class_names.map((name) => `${name} ${dataset.per_class_counts[name]}`).join(" · ");
  const unlabelled = dataset.unlabelled_count ? ` · ${dataset.unlabelled_count} unlabelled` : "";
  return `${plural(dataset.image_count, "photo")}${classes ? `: ${classes}` : ""}${unlabelled} · version ${dataset.version}`;
}

function button(label, handler, attrs = {}) {
  const node = make("button", { type: "button", textContent: label }, attrs);
  node.addEventListener("click", handler);
  return node;
}

function renderDatasets(items) {
  const list = $("#datasets");
  if (!items.length) {
    list.replaceChildren(make("li", { className: "muted", textContent: "No datasets yet: create one, or train from classes above." }));
    return;
  }
  list.replaceChildren(...items.map((dataset) => {
    const open = dataset.dataset_id === view.dataset?.dataset_id;
    const item = make("li", { className: open ? "model selected" : "model" }, { "data-testid": "dataset-item" });
    const info = make("div", { className: "model-info" });
    info.append(make("strong", { textContent: dataset.name }), make("span", { className: "muted small", textContent: summary(dataset) }));
    const actions = make("div", { className: "model-actions" });
    actions.append(
      button("Open", () => openDataset(dataset.dataset_id), { "aria-label": `Open dataset: ${dataset.name}`, "data-testid": "open-dataset" }),
      button("Delete", () => deleteDataset(dataset), { "aria-label": `Delete dataset: ${dataset.name}`, "data-testid": "delete-dataset" }),
    );
    item.append(info, actions);
    return item;
  }));
}

async function createDataset(event) {
  event.preventDefault();
  const input = $("#new-dataset-name");
  try {
    const dataset = await sendJson("/datasets", "POST", { name: input.value.trim() });
    input.value = "";
    await openDataset(dataset.dataset_id);
    part(".new-class-name").focus();
  } catch (error) {
    setError($("#datasets-error"), describe(error));
  }
}

async function deleteDataset(dataset) {
  if (!confirm(`Delete the dataset “${dataset.name}” and its ${plural(dataset.image_count, "photo")}? `
    + "Models trained on it stay. This cannot be undone.")) return;
  try {
    await remove(`/datasets/${dataset.dataset_id}`);
    if (view.dataset?.dataset_id === dataset.dataset_id) closeDataset();
    await loadDatasets();
  } catch (error) {
    setError($("#datasets-error"), describe(error));
  }
}

// --- one dataset -------------------------------------------------------------------------------------

/** Show dataset `id` (from the list, a model's link or the address's #dataset=ID). */
export async function openDataset(id) {
  const other = view.dataset?.dataset_id !== id;
  let dataset;
  try {
    dataset = await getJson(`/datasets/${encodeURIComponent(id)}`);
  } catch (error) {
    setError($("#datasets-error"), describe(error));
    return;
  }
  if (!view.root.firstElementChild) buildView();
  if (other) {
    Object.assign(view, { label: undefined, offset: 0 });
    view.selected.clear();
    setStatus("");
  }
  view.dataset = dataset;
  setViewError("");
  history.replaceState(null, "", `#dataset=${id}`);
  show(view.root);
  renderDataset();
  await Promise.all([loadPhotos(), loadDatasets(), loadInsights()]);
  view.root.scrollIntoView({ block: "start" });
}

function closeDataset() {
  show(view.root, false);
  hooks.leave(part(".job-home"));
  view.dataset = null;
  history.replaceState(null, "", location.pathname + location.search);
  loadDatasets();
}

/** Read the dataset again after a change and show it as it is now. */
async function refresh() {
  try {
    view.dataset = await getJson(datasetPath());
  } catch (error) {
    setViewError(describe(error));
    return;
  }
  renderDataset();
  await Promise.all([loadPhotos(), loadDatasets(), loadInsights()]);
}

function renderDataset() {
  const dataset = view.dataset;
  part(".dataset-name").textContent = dataset.name;
  part(".dataset-version").textContent = `version ${dataset.version} · ${plural(dataset.image_count, "photo")}`;
  if (view.label !== null && !dataset.class_names.includes(view.label)) {
    view.label = dataset.class_names[0] ?? null;
    view.offset = 0;
  }
  part(".class-list").replaceChildren(
    ...dataset.class_names.map((label) => classRow(label, dataset.per_class_counts[label])),
    classRow(null, dataset.unlabelled_count),
  );
  part("#dataset-class-names").replaceChildren(...dataset.class_names.map((label) => make("option", { value: label })));
  copyBackbones();
  renderModels();
}

/** The dataset form offers the backbones of the main form (filled when the server has answered). */
export function copyBackbones() {
  const select = view.root?.querySelector(".dataset-backbone");
  const main = $("#backbone-input");
  if (!select || select.options.length === main.options.length) return;
  select.replaceChildren(...[...main.options].map((option) => option.cloneNode(true)));
  select.value = main.value;
}

function classRow(label, count) {
  const name = className(label);
  const row = make("li", { className: label === null ? "class-row drop unlabelled" : "class-row drop" },
    { "data-testid": "dataset-class", "data-label": label ?? "" });
  const tab = make("button", { type: "button", className: "class-tab" }, { "aria-pressed": String(label === view.label) });
  tab.append(make("span", { className: "class-label", textContent: name }),
    make("span", { className: "class-count", textContent: count }, { "data-testid": "class-count" }));
  tab.addEventListener("click", () => showClass(label));
  const input = make("input", { type: "file", multiple: true, accept: PHOTOS_OR_ARCHIVES },
    { "aria-label": `Add photos to ${name}`, "data-testid": "dataset-class-files-input" });
  input.addEventListener("change", () => {
    addPhotos(label, [...input.files]);
    input.value = "";
  });
  const pick = make("label", { className: "file-button", textContent: "+ Photos", title: `Add photos, or a zip of photos, to ${name}` });
  pick.append(input);
  onDrop(row, (files) => addPhotos(label, [...files]));
  row.append(tab, pick);
  return row;
}

function showClass(label) {
  Object.assign(view, { label, offset: 0 });
  view.selected.clear();
  $$(".class-row", view.root).forEach((row) => {
    $(".class-tab", row).setAttribute("aria-pressed", String(row.dataset.label === (label ?? "")));
  });
  loadPhotos();
}

// --- photos ------------------------------------------------------------------------------------------

async function loadPhotos() {
  const generation = ++view.generation;
  const query = new URLSearchParams({ limit: PAGE_SIZE, offset: view.offset });
  if (view.label === null) query.set("unlabelled", "true");
  else query.set("label", view.label);
  let page;
  try {
    page = await getJson(`${datasetPath("/images")}?${query}`);
  } catch (error) {
    setViewError(describe(error));
    return;
  }
  if (generation !== view.generation) return;
  if (!page.items.length && page.count && view.offset) { // the last page emptied: show the one before
    view.offset = Math.floor((page.count - 1) / PAGE_SIZE) * PAGE_SIZE;
    await loadPhotos();
    return;
  }
  Object.assign(view, { images: page.items, count: page.count });
  renderPhotos(generation);
}

function renderPhotos(generation) {
  view.urls.forEach((url) => URL.revokeObjectURL(url));
  view.urls = [];
  const { images, count, offset } = view;
  part(".photos-title").textContent = `${className(view.label)}: ${plural(count, "photo")}`;
  part(".page-info").textContent = count ? `${offset + 1}–${offset + images.length} of ${count}` : "";
  part(".prev-page").disabled = offset === 0;
  part(".next-page").disabled = offset + PAGE_SIZE >= count;
  show(part(".pager"), count > PAGE_SIZE);
  const list = part(".photos");
  if (!images.length) {
    const hint = view.label === null
      ? "No unlabelled photos. Photos added here (or without a class) wait for a label and are not used for training."
      : "No photos here yet: drop some on the class or use + Photos.";
    list.replaceChildren(make("li", { className: "muted empty", textContent: hint }));
  } else {
    list.replaceChildren(...images.map((image) => photoTile(image, generation)));
  }
  updateSelection();
}

function photoTile(image, generation) {
  const tile = make("li", { className: view.selected.has(image.image_id) ? "photo selected" : "photo" },
    { "data-testid": "photo", "data-image-id": image.image_id });
  const pick = make("label", { className: "photo-pick", title: `${image.filename} (${image.width}×${image.height})` });
  const check = make("input", { type: "checkbox", className: "photo-check", checked: view.selected.has(image.image_id) },
    { "aria-label": `Select ${image.filename}`, "data-testid": "photo-checkbox" });
  check.addEventListener("change", () => {
    if (check.checked) view.selected.add(image.image_id);
    else view.selected.delete(image.image_id);
    tile.classList.toggle("selected", check.checked);
    updateSelection();
  });
  const img = make("img", { alt: image.filename, decoding: "async" });
  pick.append(check, img, make("span", { className: "filename", textContent: image.filename }));
  tile.append(pick);
  blobUrl(datasetPath(`/images/${image.image_id}`)).then((url) => {
    if (generation !== view.generation) {
      URL.revokeObjectURL(url);
      return;
    }
    view.urls.push(url);
    img.src = url;
  }, () => img.classList.add("broken"));
  return tile;
}

function updateSelection() {
  const count = view.selected.size;
  part(".selection-count").textContent = `${count} selected`;
  for (const selector of [".relabel-button", ".unlabel-button", ".delete-photos", ".clear-selection"]) {
    part(selector).disabled = count === 0;
  }
  part(".unlabel-button").hidden = view.label === null;
}

function selectPage(selected) {
  for (const image of view.images) {
    if (selected) view.selected.add(image.image_id);
    else view.selected.delete(image.image_id);
  }
  if (!selected) view.selected.clear();
  $$(".photo", view.root).forEach((tile) => {
    const on = view.selected.has(tile.dataset.imageId);
    tile.classList.toggle("selected", on);
    $(".photo-check", tile).checked = on;
  });
  updateSelection();
}

function turnPage(step) {
  view.offset = Math.max(0, view.offset + step * PAGE_SIZE);
  loadPhotos();
}

async function relabel(label) {
  const ids = [...view.selected];
  if (label !== null && !label) {
    setViewError("Choose or type the class to move the selected photos to.");
    part(".relabel-input").focus();
    return;
  }
  setViewError("");
  try {
    const answer = await sendJson(datasetPath("/images"), "PATCH", { image_ids: ids, label });
    setStatus(`Moved ${plural(ids.length, "photo")} to ${label ?? "unlabelled"} · version ${answer.version}`);
    view.selected.clear();
    part(".relabel-input").value = "";
    await refresh();
  } catch (error) {
    setViewError(describe(error));
  }
}

async function deleteSelected() {
  const ids = [...view.selected];
  if (!confirm(`Delete ${plural(ids.length, "photo")} from “${view.dataset.name}”? Models already trained keep their results.`)) return;
  setViewError("");
  try {
    const answer = await sendJson(datasetPath("/images"), "DELETE", { image_ids: ids });
    setStatus(`Deleted ${plural(ids.length, "photo")} · version ${answer.version}`);
    view.selected.clear();
    await refresh();
  } catch (error) {
    setViewError(describe(error));
  }
}

// --- adding photos -----------------------------------------------------------------------------------

/** Photos (and the photos inside archives) to class `label`, or unlabelled when it is null. */
async function addPhotos(label, files) {
  if (!files.length) return;
  setViewError("");
  const photos = [];
  const skipped = [];
  for (const file of files) {
    if (!isArchive(file)) {
      photos.push(file);
      continue;
    }
    try {
      const unpacked = await unpack(file);
      photos.push(...unpacked.files);
      skipped.push(...unpacked.skipped);
    } catch (error) {
      setViewError(`${file.name}: ${error.message}`);
      return;
    }
  }
  if (!photos.length) {
    setViewError(`No photos to add.${skipped.length ? ` Left out: ${listed(skipped)}.` : ""}`);
    return;
  }
  const form = new FormData();
  if (label !== null) form.append("label", label);
  photos.forEach((file) => form.append("files", file, file.name));
  if (await upload(form, `${plural(photos.length, "photo")} to ${className(label)}`, skipped)) {
    Object.assign(view, { label, offset: 0 });
    await refresh();
  }
}

/** Archives of class folders (zip, tar, tar.gz) to the dataset; loose photos stay unlabelled. */
async function addToDataset(files) {
  const archives = files.filter(isArchive);
  const photos = files.filter((file) => !isArchive(file));
  for (const archive of archives) {
    setViewError("");
    const form = new FormData();
    form.append("archive", archive, archive.name);
    if (!(await upload(form, archive.name, []))) return;
  }
  if (photos.length) await addPhotos(null, photos);
  else if (archives.length) await refresh();
}

/** POST one addition; reports what was added, found twice or left out. True when it went through. */
async function upload(form, what, skippedHere) {
  form.append("skip_invalid", "true");
  setStatus(`Uploading ${what}…`);
  try {
    const answer = await postForm(datasetPath("/images"), form);
    const lines = [`Added ${plural(answer.added.length, "photo")} · version ${answer.version}`];
    if (answer.duplicates.length) {
      lines.push(`${plural(answer.duplicates.length, "photo")} already in the dataset, not stored again: `
        + listed(answer.duplicates.map((d) => d.filename)));
    }
    const skipped = [...skippedHere, ...answer.skipped.map((s) => `${s.filename} (${s.detail})`)];
    if (skipped.length) lines.push(`Left out: ${listed(skipped)}`);
    setStatus(lines.join("\n"));
    setViewError(answer.errors.map((e) => `${e.filename || "a file"}: ${e.detail}`).join("\n"));
    return true;
  } catch (error) {
    setStatus("");
    setViewError(describe(error));
    return false;
  }
}

function addToNewClass(files) {
  const input = part(".new-class-name");
  const label = input.value.trim();
  if (!label) {
    setViewError("Name the new class first, then add its photos.");
    input.focus();
    return;
  }
  addPhotos(label, files).then(() => {
    if (view.dataset.class_names.includes(label)) input.value = "";
  });
}

// --- training and models -----------------------------------------------------------------------------

async function train(event) {
  event.preventDefault();
  const fields = new FormData(event.target);
  const form = new FormData();
  for (const [key, value] of fields) {
    if (String(value).trim() !== "") form.append(key, value);
  }
  const trainButton = part(".dataset-train-button");
  const trainedId = view.dataset.dataset_id;
  trainButton.disabled = true;
  setViewError("");
  try {
    const job = await postForm(datasetPath("/train"), form);
    hooks.follow(job.job_id, Number(fields.get("epochs")), {
      home: part(".job-home"),
      trainButton,
      cancelButton: part(".dataset-cancel"),
      succeeded: async () => {
        if (view.dataset?.dataset_id !== trainedId) return; // another dataset is open now
        await refresh();
        part(".dataset-models").scrollIntoView({ block: "nearest" });
      },
    });
  } catch (error) {
    setViewError(describe(error));
    trainButton.disabled = false;
  }
}

/** A model of this dataset; `older` is the model trained before it, to compare with. */
function modelCard(model, older, newest) {
  const card = make("li", { className: newest ? "dataset-model newest" : "dataset-model" }, { "data-testid": "dataset-model" });
  card.append(make("strong", { className: "model-name", textContent: model.name }));
  const accuracy = make("p", { className: "accuracy" });
  accuracy.append(make("span", { className: "big", textContent: percent(model.test_accuracy) }, { "data-testid": "dataset-model-accuracy" }),
    make("span", { className: "muted small", textContent: " test accuracy" }));
  const ci = make("span", { className: "muted small ci" }, { "data-testid": "dataset-model-ci" });
  const rough = make("span", { className: "rough-note small" }, { "data-testid": "dataset-model-rough", hidden: "" });
  card.append(accuracy, ci, rough,
    make("span", { textContent: `dataset version ${model.dataset_version ?? "?"}` }, { "data-testid": "dataset-model-version" }));
  modelDetail(model.model_id).then((detail) => describeAccuracy(detail.metrics || {}, ci, rough), () => {});
  if (older && model.test_accuracy != null && older.test_accuracy != null) {
    const points = (model.test_accuracy - older.test_accuracy) * 100;
    const sign = points > 0.05 ? "up" : points < -0.05 ? "down" : "same";
    const text = sign === "same" ? "same as" : `${points > 0 ? "+" : "−"}${Math.abs(points).toFixed(1)} points vs`;
    card.append(make("span", { className: `delta ${sign}`, textContent: `${text} version ${older.dataset_version ?? "?"}` }));
  }
  const created = model.created_at ? new Date(model.created_at).toLocaleString() : "";
  card.append(make("span", { className: "muted small", textContent: created }));
  card.append(button("Details", () => hooks.showModel(model.model_id), { "aria-label": `Show the results of ${model.name}` }));
  return card;
}

/** The interval, cross-validated accuracy and "rough" warning of a dataset model's card. */
function describeAccuracy(metrics, ci, rough) {
  const cv = cvText(metrics.cv_accuracy);
  ci.textContent = [ciText(metrics.test_accuracy_ci), cv && `cross-validated ${cv}`].filter(Boolean).join(" · ");
  const warning = roughWarning(metrics);
  rough.textContent = warning ? `Rough figure: ${plural(metrics.test_count ?? 0, "test photo")}` : "";
  rough.title = warning;
  rough.hidden = !warning;
}

function renderModels() {
  const models = view.dataset.models || [];
  const note = part(".models-note");
  if (!models.length) note.textContent = "No model trained on this dataset yet.";
  else if (models[0].dataset_version !== view.dataset.version) {
    note.textContent = `The dataset changed since the newest model (version ${models[0].dataset_version} → `
      + `${view.dataset.version}): train again to include the changes.`;
  } else note.textContent = "Newest first; each model is tested on the photos of its own version.";
  const shown = models.slice(0, SHOWN_MODELS);
  part(".dataset-models").replaceChildren(...shown.map((model, i) => modelCard(model, models[i + 1], i === 0)));
  show(part(".dataset-compare"), models.length >= 2);
}

// --- start -------------------------------------------------------------------------------------------

/** The view is made on first use, so its form fields exist only once a dataset is open. */
function buildView() {
  view.root.append($("#dataset-template").content.cloneNode(true));
  placeTrainOptions(part(".train-options"), "dataset-");
  part(".close-dataset").addEventListener("click", closeDataset);
  part(".rename-dataset").addEventListener("click", async () => {
    const name = prompt("New name for this dataset", view.dataset.name);
    if (!name || !name.trim()) return;
    try {
      await sendJson(datasetPath(), "PATCH", { name: name.trim() });
      await refresh();
    } catch (error) {
      setViewError(describe(error));
    }
  });
  const archive = part(".dataset-archive-input");
  archive.addEventListener("change", () => {
    addToDataset([...archive.files]);
    archive.value = "";
  });
  onDrop(part(".dataset-drop"), (files) => addToDataset([...files]));
  const newFiles = part(".new-class-files");
  newFiles.addEventListener("change", () => {
    addToNewClass([...newFiles.files]);
    newFiles.value = "";
  });
  onDrop(part(".new-class"), (files) => addToNewClass([...files]));
  part(".new-class").addEventListener("submit", (event) => event.preventDefault());
  part(".prev-page").addEventListener("click", () => turnPage(-1));
  part(".next-page").addEventListener("click", () => turnPage(1));
  part(".select-page").addEventListener("click", () => selectPage(true));
  part(".clear-selection").addEventListener("click", () => selectPage(false));
  part(".relabel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    relabel(part(".relabel-input").value.trim());
  });
  part(".unlabel-button").addEventListener("click", () => relabel(null));
  part(".delete-photos").addEventListener("click", deleteSelected);
  part(".dataset-train-form").addEventListener("submit", train);
  part(".dataset-cancel").addEventListener("click", () => hooks.cancel());
  part(".dataset-compare").addEventListener("click", () => {
    const ids = (view.dataset.models || []).slice(0, SHOWN_MODELS).map((m) => m.model_id);
    hooks.compare(ids, view.dataset.dataset_id);
  });
  initInsights({ root: view.root, path: datasetPath, id: () => view.dataset?.dataset_id, refresh });
}

function openFromAddress() {
  const match = /^#dataset=([\w-]+)$/.exec(location.hash);
  if (match) openDataset(match[1]);
}

/** Wire the datasets panel; `given` are the page's training and model hooks (see `hooks`). */
export function initDatasets(given) {
  hooks = given;
  view.root = $("#dataset-view");
  $("#create-dataset-form").addEventListener("submit", createDataset);
  addEventListener("hashchange", openFromAddress);
  loadDatasets();
  openFromAddress();
}
