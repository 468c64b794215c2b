// The Vision Trainer page: classes with photos -> train with live progress -> result -> try it -> models,
// and datasets to improve and train again (datasets.js).
// Talks only to the JSON API (see api.js); no build step, no outside assets.

import {
  ApiError, blobUrl, download, fetchOk, followEvents, getJson, onKeyNeeded, post, postForm, remove, sendJson,
} from "./api.js";
import { ciText, cvText, forgetModel, modelDetail, roughWarning } from "./accuracy.js";
import { drawChart, parseEpochLine } from "./chart.js";
import { compareModels, initCompare, setCompareDatasets, setCompareModels } from "./compare.js";
import { copyBackbones, initDatasets, loadDatasets, openDataset } from "./datasets.js";
import { EXPORT_FORMATS, exportModel } from "./exports.js";
import { placeTrainOptions } from "./options.js";
import { $, describe, fillConfusion, make, onDrop, percent, setError, show } from "./ui.js";

const PHASES = {
  queued: "Waiting for a free worker",
  preparing: "Preparing",
  extracting: "Extracting features",
  training: "Training the classifier",
  tuning: "Tuning the top of the backbone",
  evaluating: "Evaluating on the test photos",
  saving: "Saving the model",
  done: "Done",
};

const state = {
  classes: [], // {name input, files: File[], urls: string[], card}
  job: null, // {id, epochs, rows, abort, target}
  model: null, // model id to try; null = the server's default
  models: [],
  lastFile: null,
  datasetNames: new Map(), // dataset id -> name, for the model list
};

// --- API key ---------------------------------------------------------------------------------------

onKeyNeeded(() => new Promise((resolve) => {
  const dialog = $("#key-dialog");
  const input = $("#key-input");
  input.value = "";
  dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? input.value.trim() : null), { once: true });
  dialog.showModal();
  input.focus();
}));

// --- classes ---------------------------------------------------------------------------------------

function addClass(name) {
  const card = $("#class-template").content.firstElementChild.cloneNode(true);
  const entry = { card, files: [], urls: [], name: $(".class-name", card) };
  entry.name.value = name ?? `Class ${state.classes.length + 1}`;
  entry.name.setAttribute("aria-label", "Class name");
  $(".class-files", card).addEventListener("change", (event) => {
    addFiles(entry, event.target.files);
    event.target.value = "";
  });
  $(".remove-class", card).addEventListener("click", () => removeClass(entry));
  onDrop($(".class-drop", card), (files) => addFiles(entry, files));
  state.classes.push(entry);
  $("#classes").append(card);
  renderClasses();
  return entry;
}

function removeClass(entry) {
  if (state.classes.length <= 2) return;
  entry.urls.forEach((url) => URL.revokeObjectURL(url));
  entry.card.remove();
  state.classes = state.classes.filter((c) => c !== entry);
  renderClasses();
}

function addFiles(entry, files) {
  for (const file of files) {
    entry.files.push(file);
    entry.urls.push(URL.createObjectURL(file));
  }
  setError($(".class-error", entry.card), "");
  setError($("#upload-error"), "");
  renderThumbs(entry);
}

function removeFile(entry, index) {
  URL.revokeObjectURL(entry.urls[index]);
  entry.files.splice(index, 1);
  entry.urls.splice(index, 1);
  renderThumbs(entry);
}

function renderThumbs(entry, refused = new Map()) {
  const list = $(".class-thumbs", entry.card);
  list.replaceChildren(...entry.files.map((file, index) => {
    const item = document.createElement("li");
    item.className = refused.has(index) ? "thumb refused" : "thumb";
    const img = Object.assign(document.createElement("img"), { src: entry.urls[index], alt: file.name, loading: "lazy" });
    img.addEventListener("error", () => img.classList.add("broken"), { once: true });
    const button = Object.assign(document.createElement("button"), { type: "button", textContent: "✕" });
    button.setAttribute("aria-label", `Remove ${file.name}`);
    button.addEventListener("click", () => removeFile(entry, index));
    item.title = refused.get(index) || file.name;
    item.append(img, button);
    return item;
  }));
  const count = entry.files.length;
  $(".count", entry.card).textContent = `${count} photo${count === 1 ? "" : "s"}`;
}

function renderClasses() {
  state.classes.forEach((entry) => {
    $(".remove-class", entry.card).disabled = state.classes.length <= 2;
  });
}

/** Show the server's per-file refusals on the photos they concern. */
function showRefusedFiles(errors) {
  state.classes.forEach((entry, i) => {
    const mine = errors.filter((e) => e.field === `files${i + 1}`);
    const refused = new Map(mine.map((e) => [e.index, `${e.filename}: ${e.detail}`]));
    renderThumbs(entry, refused);
    setError($(".class-error", entry.card), mine.map((e) => `${e.filename || `photo ${e.index + 1}`}: ${e.detail}`).join("\n"));
  });
}

// --- training --------------------------------------------------------------------------------------

function trainingForm() {
  const form = new FormData();
  state.classes.forEach((entry, i) => {
    form.append(`label${i + 1}`, entry.name.value.trim());
    entry.files.forEach((file) => form.append(`files${i + 1}`, file, file.name));
  });
  const fields = new FormData($("#train-form"));
  for (const [key, value] of fields) {
    if (String(value).trim() !== "") form.append(key, value);
  }
  return form;
}

function checkClasses() {
  const names = state.classes.map((c) => c.name.value.trim());
  if (names.some((n) => !n)) return "Give every class a name.";
  if (new Set(names.map((n) => n.toLowerCase())).size !== names.length) return "Class names must differ.";
  const few = state.classes.find((c) => c.files.length < 2);
  if (few) return `“${few.name.value.trim()}” needs at least 2 photos.`;
  return null;
}

async function startTraining(event) {
  event.preventDefault();
  const problem = checkClasses();
  setError($("#upload-error"), problem);
  if (problem) return;
  const button = $("#train-button");
  button.disabled = true;
  button.textContent = "Uploading…";
  try {
    const job = await postForm("/train", trainingForm());
    state.classes.forEach((entry) => renderThumbs(entry));
    followJob(job.job_id, Number($("#epochs-input").value), classesTarget());
  } catch (error) {
    setError($("#upload-error"), describe(error));
    if (error instanceof ApiError && error.errors.length) showRefusedFiles(error.errors);
    button.disabled = false;
  } finally {
    button.textContent = "Train";
  }
}

/** Where a job started from the classes above shows its progress, and what happens when it ends. */
function classesTarget() {
  return {
    home: $("#train-title").parentElement,
    trainButton: $("#train-button"),
    cancelButton: $("#cancel-button"),
    succeeded: async () => {
      await loadDatasets();
      $("#result-title").scrollIntoView({ behavior: "smooth", block: "start" });
    },
  };
}

/** Put the progress and chart below the form that started the job (`home`). */
function placeJobView(home) {
  if ($("#progress").parentElement !== home) home.append($("#progress"), $("#chart"));
}

/** A dataset view that closes hands the job view back to the classes' form. */
function leaveJobView(home) {
  if ($("#progress").parentElement === home) placeJobView(classesTarget().home);
}

function endJobView(target) {
  target.trainButton.disabled = false;
  show(target.cancelButton, false);
}

/** Follow job `jobId` with the progress, log and chart under `target.home` (see classesTarget). */
async function followJob(jobId, epochs, target) {
  if (state.job) {
    state.job.abort.abort();
    endJobView(state.job.target);
  }
  const job = { id: jobId, epochs, rows: [], abort: new AbortController(), target };
  state.job = job;
  placeJobView(target.home);
  target.trainButton.disabled = true;
  show($("#progress"));
  show($("#chart"));
  show($("#result"), false);
  show(target.cancelButton);
  $("#job-log").textContent = "";
  $("#progress-text").textContent = PHASES.queued;
  $("#progress-epoch").textContent = "";
  drawChart($("#chart-svg"), job.rows, epochs);
  try {
    const final = await followEvents(jobId, (kind, data) => onJobEvent(job, kind, data), job.abort.signal);
    await onJobEnded(job, final);
  } catch (error) {
    if (!job.abort.signal.aborted) $("#progress-text").textContent = describe(error);
  } finally {
    if (state.job === job) endJobView(target);
  }
}

function onJobEvent(job, kind, data) {
  if (kind === "progress") {
    const bar = $("#progress-bar");
    $("#progress-text").textContent = data.total
      ? `${PHASES[data.phase] || data.phase}: ${data.done} / ${data.total}${data.phase === "extracting" ? " images" : ""}`
      : PHASES[data.phase] || data.phase;
    bar.max = Math.max(data.total, 1);
    bar.value = Math.min(data.done, bar.max);
    if (data.epoch) {
      $("#progress-epoch").textContent = data.phase === "tuning" ? `tuned epoch ${data.epoch} / ${data.total}` : `epoch ${data.epoch} / ${job.epochs}`;
    }
  } else if (kind === "log") {
    $("#job-log").textContent += `${data.line}\n`;
    const row = parseEpochLine(data.line);
    if (row) {
      job.epochs = row.epochs;
      job.rows.push(row);
      drawChart($("#chart-svg"), job.rows, job.epochs);
    }
  }
}

async function onJobEnded(job, final) {
  const text = $("#progress-text");
  if (final.status === "succeeded") {
    text.textContent = "Done";
    $("#progress-bar").value = $("#progress-bar").max;
    state.model = final.model_id;
    await Promise.all([showResult(final.model_id), loadModels()]);
    await job.target.succeeded();
  } else if (final.status === "cancelled") {
    text.textContent = "Cancelled";
  } else {
    text.textContent = `Failed: ${final.error}`;
  }
}

async function cancelTraining() {
  if (!state.job) return;
  try {
    await post(`/jobs/${state.job.id}/cancel`);
    $("#progress-text").textContent = "Cancelling…";
  } catch (error) {
    $("#progress-text").textContent = describe(error);
  }
}

// --- result ----------------------------------------------------------------------------------------

async function showResult(modelId) {
  const model = await getJson(`/models/${modelId}`);
  const metrics = model.metrics || {};
  $("#test-accuracy").textContent = percent(metrics.test_accuracy);
  $("#test-accuracy-ci").textContent = metrics.test_accuracy_ci ? `(${ciText(metrics.test_accuracy_ci)})` : "";
  $("#result-note").textContent = `on ${metrics.test_count ?? "?"} test photos never used for training · ${model.backbone}`;
  showUncertainty(metrics);
  if (model.history?.length) drawChart($("#chart-svg"), model.history, model.history.length);
  await showDatasetOf(model);

  const perClass = $("#per-class");
  perClass.replaceChildren();
  perClass.createCaption().textContent = "Precision, recall and F1 on the test photos";
  const head = perClass.createTHead().insertRow();
  for (const title of ["class", "precision", "recall", "F1", "photos"]) {
    head.append(Object.assign(document.createElement("th"), { scope: "col", textContent: title }));
  }
  const body = perClass.createTBody();
  for (const [label, row] of Object.entries(metrics.per_class || {})) {
    const tr = body.insertRow();
    tr.append(Object.assign(document.createElement("th"), { scope: "row", textContent: label }));
    for (const value of [percent(row.precision), percent(row.recall), percent(row.f1), row.support]) {
      tr.insertCell().textContent = value;
    }
  }

  fillConfusion($("#confusion"), model.class_names, metrics.confusion_matrix || []);

  const wrong = metrics.misclassified || [];
  const thumbs = $("#misclassified");
  thumbs.replaceChildren();
  if (!wrong.length) thumbs.textContent = "None: every test photo was classified correctly.";
  for (const item of wrong.slice(0, 48)) {
    const figure = document.createElement("figure");
    const img = Object.assign(document.createElement("img"), { alt: `A ${item.true} photo predicted as ${item.predicted}` });
    const caption = document.createElement("figcaption");
    caption.textContent = `${item.true} → ${item.predicted} (${percent(item.confidence)})`;
    const why = make("button", { type: "button", className: "small", textContent: "Where it looked" },
      { "data-testid": "explain-mistake" });
    why.addEventListener("click", () => explainMistake(modelId, item, img, why));
    figure.append(img, caption, why);
    thumbs.append(figure);
    blobUrl(`/models/${modelId}/images/${item.image_id}`).then((url) => { img.src = url; }).catch(() => img.remove());
  }
  show($("#result"));
  updateTryModel();
}

/** How deep training went (`metrics.tuning`) and why, in a sentence; "" for a head trained with tune=head. */
function tuningText(tuning) {
  if (!tuning) return "";
  if (tuning.why === "head_enough") {
    return `Kept the head without tuning the backbone: its cross-validated accuracy ${percent(tuning.cv_accuracy)} on the training photos leaves too little to gain.`;
  }
  if (tuning.why === "validation_fold_too_small") {
    return `Kept the head without tuning the backbone: a validation fold would hold only ${tuning.validation_count} training photos, too few to compare the two.`;
  }
  const scores = tuning.validation_accuracy;
  if (!scores) return "";
  if (tuning.cut === "full") {
    return `Fine-tuned end to end (${tuning.epochs} epochs): ${percent(scores.top)} on ${tuning.validation_count} training photos held out.`;
  }
  const kept = tuning.kept === "top" ? `kept the tuned ${tuning.cut}` : "kept the head";
  return `Tuned ${tuning.cut} (${tuning.epochs} epochs): ${percent(scores.head)} → ${percent(scores.top)} on ${tuning.validation_count} training photos held out (head only → tuned); ${kept}.`;
}

/** The "rough" warning, the cross-validated accuracy, the tuning and how `auto` chose the backbone. */
function showUncertainty(metrics) {
  const rough = roughWarning(metrics);
  $("#result-rough").textContent = rough;
  show($("#result-rough"), Boolean(rough));
  const cv = cvText(metrics.cv_accuracy);
  $("#result-cv").textContent = cv ? `Cross-validated accuracy on the training photos: ${cv}.` : "";
  show($("#result-cv"), Boolean(cv));
  const tuning = tuningText(metrics.tuning);
  $("#result-tuning").textContent = tuning;
  show($("#result-tuning"), Boolean(tuning));
  const selection = metrics.backbone_selection || [];
  show($("#backbone-selection"), selection.length > 0);
  const table = $("#backbone-selection table");
  table.replaceChildren();
  if (!selection.length) return;
  table.createCaption().textContent = "backbone=auto compared the backbones by cross-validated accuracy on the training photos (never the test photos)";
  const head = table.createTHead().insertRow();
  for (const title of ["backbone", "cross-validated accuracy", "seconds"]) head.append(make("th", { scope: "col", textContent: title }));
  const best = Math.max(...selection.map((s) => s.cv_accuracy));
  const body = table.createTBody();
  for (const row of selection) {
    const tr = body.insertRow();
    tr.append(make("th", { scope: "row", textContent: row.backbone }));
    tr.insertCell().textContent = `${percent(row.cv_accuracy)}${row.cv_std !== undefined ? ` ± ${(row.cv_std * 100).toFixed(1)}` : ""}`;
    tr.insertCell().textContent = row.seconds.toFixed(2);
    if (row.cv_accuracy === best) tr.className = "best";
  }
}

/** The dataset and version a model was trained on, with a link to open the dataset. */
async function showDatasetOf(model) {
  const line = $("#result-dataset");
  show(line, Boolean(model.dataset_id));
  if (!model.dataset_id) return;
  const counts = model.data?.per_class_counts || {};
  const photos = Object.values(counts).reduce((a, b) => a + b, 0);
  const dataset = await getJson(`/datasets/${model.dataset_id}`).catch(() => null);
  const link = make("a", { href: `#dataset=${model.dataset_id}`, textContent: dataset ? `“${dataset.name}”` : "a deleted dataset" },
    { "data-testid": "result-dataset-link" });
  link.addEventListener("click", (event) => {
    event.preventDefault();
    openDataset(model.dataset_id);
  });
  if (!dataset) link.removeAttribute("href");
  line.replaceChildren("Trained on ", make("strong", { textContent: `version ${model.dataset_version}` }),
    ` of dataset `, dataset ? link : make("span", { textContent: "a dataset since deleted" }),
    ` (${photos} labelled photos)`,
    dataset ? (dataset.version === model.dataset_version ? ": open it to add photos, fix labels and train again."
      : `; the dataset is at version ${dataset.version} now.`) : ".");
}

// --- try it ----------------------------------------------------------------------------------------

function updateTryModel() {
  const model = state.models.find((m) => m.model_id === state.model);
  $("#try-model").textContent = model ? model.name : state.model ? state.model : "the default model";
}

async function predict(file) {
  state.lastFile = file;
  const preview = $("#predict-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  show(preview);
  const form = new FormData();
  form.append("file", file, file.name || "photo.png");
  if (state.model) form.append("model_id", state.model);
  form.append("min_confidence", $("#min-confidence").value);
  form.append("reject_novel", $("#reject-novel").checked ? "true" : "false");
  form.append("explain", $("#explain").checked ? "true" : "false");
  setError($("#predict-error"), "");
  $("#prediction-label").textContent = "…";
  try {
    const answer = await postForm("/predict", form);
    $("#prediction-label").textContent = answer.prediction;
    $("#prediction-label").classList.toggle("unknown", answer.prediction === "unknown");
    showNovelty(answer);
    showHeatmap($("#heatmap"), answer.heatmap);
    $("#top-k").replaceChildren(...answer.top_k.map((entry) => {
      const li = document.createElement("li");
      li.innerHTML = '<span class="bar-label"></span><span class="bar"><span class="fill"></span></span><span class="bar-value"></span>';
      $(".bar-label", li).textContent = entry.label;
      $(".fill", li).style.width = `${(entry.confidence * 100).toFixed(1)}%`;
      $(".bar-value", li).textContent = percent(entry.confidence);
      return li;
    }));
  } catch (error) {
    $("#prediction-label").textContent = "";
    $("#top-k").replaceChildren();
    setError($("#predict-error"), describe(error));
  }
}

/** Whether the photo looks like the training photos: its novelty score against the model's threshold. */
function showNovelty(answer) {
  const line = $("#novelty");
  const novelty = answer.novelty;
  line.textContent = novelty
    ? (novelty.novel
      ? `Unlike the training photos (novelty ${novelty.score.toFixed(3)} > ${novelty.threshold.toFixed(3)}): `
        + "the model has not seen anything like it, so its answer means little."
      : `Like the training photos (novelty ${novelty.score.toFixed(3)} ≤ ${novelty.threshold.toFixed(3)}).`)
    : `Novelty unavailable: ${answer.novelty_note || "this model cannot tell"}`;
  line.classList.toggle("warning", Boolean(novelty?.novel));
  show(line);
}

/** The heatmap overlay of an answer (explain=true) in `figure`, or hide it. */
function showHeatmap(figure, heatmap) {
  show(figure, Boolean(heatmap));
  if (!heatmap) return;
  $("img", figure).src = `data:image/png;base64,${heatmap.png}`;
  $("figcaption", figure).textContent = `Where the model looked for "${heatmap.label}" (the part of the photo it saw; `
    + "red = most evidence)";
}

/** Swap a misclassified test photo for its heatmap: what the model looked at when it got it wrong. */
async function explainMistake(modelId, item, img, button) {
  button.disabled = true;
  try {
    const response = await fetchOk(`/models/${modelId}/images/${item.image_id}`); // sends the API key
    const form = new FormData();
    form.append("file", await response.blob(), item.filename || "photo.jpg");
    form.append("model_id", modelId);
    form.append("explain", "true");
    const answer = await postForm("/predict", form);
    img.src = `data:image/png;base64,${answer.heatmap.png}`;
    img.alt = `Where the model looked when it said ${answer.heatmap.label}`;
    button.remove();
  } catch (error) {
    button.disabled = false;
    button.title = describe(error);
  }
}

async function startWebcam() {
  const video = $("#webcam");
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
    await video.play();
    show(video);
    show($("#snap-button"));
  } catch (error) {
    setError($("#predict-error"), `The webcam is not available: ${error.message}`);
  }
}

function snapWebcam() {
  const video = $("#webcam");
  const canvas = Object.assign(document.createElement("canvas"), { width: video.videoWidth, height: video.videoHeight });
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => blob && predict(new File([blob], "webcam.png", { type: "image/png" })), "image/png");
}

// --- models ----------------------------------------------------------------------------------------

async function loadModels() {
  setError($("#models-error"), "");
  try {
    const [listing, defaultId] = await Promise.all([
      getJson("/models?limit=100"),
      getJson("/models/default").then((m) => m.model_id, () => null),
    ]);
    state.models = listing.items;
    renderModels(defaultId);
    setCompareModels(state.models);
    updateTryModel();
  } catch (error) {
    setError($("#models-error"), describe(error));
  }
}

function trainedOn(model) {
  if (!model.dataset_id) return "";
  const name = state.datasetNames.get(model.dataset_id);
  return ` · ${name ? `dataset “${name}”` : "dataset"} version ${model.dataset_version}`;
}

function renderModels(defaultId) {
  state.defaultId = defaultId;
  const list = $("#models");
  if (!state.models.length) {
    list.replaceChildren(Object.assign(document.createElement("li"), { className: "muted", textContent: "No models yet: train one above." }));
    return;
  }
  list.replaceChildren(...state.models.map((model) => {
    const li = document.createElement("li");
    li.className = model.model_id === state.model ? "model selected" : "model";
    const info = document.createElement("div");
    info.className = "model-info";
    const name = Object.assign(document.createElement("strong"), { textContent: model.name });
    const meta = make("span", { className: "muted small" });
    const ci = make("span", { className: "ci" }, { "data-testid": "model-accuracy-ci" });
    meta.append(make("span", { textContent: percent(model.metrics?.test_accuracy) }, { "data-testid": "model-accuracy" }), " ", ci,
      ` test accuracy · ${new Date(model.created_at).toLocaleString()} · ${model.backbone}${trainedOn(model)}`);
    const rough = make("span", { className: "rough-note small" }, { "data-testid": "model-rough", hidden: "" });
    info.append(name, meta, rough);
    modelDetail(model.model_id).then(({ metrics = {} }) => {
      ci.textContent = metrics.test_accuracy_ci ? `(${ciText(metrics.test_accuracy_ci)})` : "";
      const warning = roughWarning(metrics);
      rough.textContent = warning ? `Rough figure: only ${metrics.test_count ?? "a few"} test photos` : "";
      rough.title = warning;
      rough.hidden = !warning;
    }, () => {});
    if (model.model_id === defaultId) info.append(Object.assign(document.createElement("span"), { className: "badge", textContent: "default" }));
    const actions = document.createElement("div");
    actions.className = "model-actions";
    const button = (label, handler, aria) => {
      const b = Object.assign(document.createElement("button"), { type: "button", textContent: label });
      b.setAttribute("aria-label", `${aria || label}: ${model.name}`);
      b.addEventListener("click", () => handler().catch((error) => setError($("#models-error"), describe(error))));
      actions.append(b);
      return b;
    };
    button("Try", async () => {
      state.model = model.model_id;
      renderModels(defaultId);
      await showResult(model.model_id);
      if (state.lastFile) await predict(state.lastFile);
    }, "Try this model");
    if (model.model_id !== defaultId) {
      button("Set default", async () => {
        await sendJson("/models/default", "PUT", { model_id: model.model_id });
        await loadModels();
      });
    }
    button("Rename", async () => {
      const name = prompt("New name for this model", model.name);
      if (name && name.trim()) {
        await sendJson(`/models/${model.model_id}`, "PATCH", { name: name.trim() });
        await loadModels();
      }
    });
    button("Checkpoint", () => download(`/models/${model.model_id}/checkpoint`, "trained_model.pth"), "Download the checkpoint");
    const formats = make("select", { className: "export-format" }, { "aria-label": `Export format: ${model.name}` });
    formats.append(...EXPORT_FORMATS.map(([value, label]) => make("option", { value, textContent: label })));
    actions.append(formats);
    const exportButton = button("Export", async () => {
      exportButton.disabled = true;
      try {
        await exportModel(model.model_id, formats.value, (text) => { exportButton.textContent = text; });
      } finally {
        exportButton.disabled = false;
        exportButton.textContent = "Export";
      }
    }, "Download in the chosen format");
    button("Delete", async () => {
      if (!confirm(`Delete “${model.name}” and its files? This cannot be undone.`)) return;
      await remove(`/models/${model.model_id}`);
      forgetModel(model.model_id);
      if (state.model === model.model_id) state.model = null;
      await loadModels();
    });
    li.append(info, actions);
    return li;
  }));
}

// --- start -----------------------------------------------------------------------------------------

async function loadService() {
  try {
    const info = await getJson("/");
    $("#service-info").textContent = `v${info.version} · ${info.device} · default backbone ${info.default_backbone}`;
    $("#service-info").title = info.default_backbone_note;
    const fallback = info.backbones.some((b) => !b.pretrained_available);
    $("#backbone-note").textContent = fallback ? info.default_backbone_note : "";
    const select = $("#backbone-input");
    const auto = make("option", { value: "auto", textContent: "auto (the best for these photos)" });
    select.replaceChildren(auto, ...info.backbones.map((b) => {
      const option = Object.assign(document.createElement("option"), {
        value: b.name,
        textContent: b.pretrained_available ? b.name : `${b.name} (weights not available)`,
        disabled: !b.pretrained_available,
      });
      option.selected = b.name === info.default_backbone;
      return option;
    }));
    copyBackbones();
  } catch (error) {
    $("#service-info").textContent = describe(error);
  }
}

function init() {
  placeTrainOptions($("#train-form .train-options"));
  addClass("Class 1");
  addClass("Class 2");
  $("#add-class").addEventListener("click", () => addClass().name.focus());
  $("#train-form").addEventListener("submit", startTraining);
  $("#cancel-button").addEventListener("click", cancelTraining);
  $("#predict-file-input").addEventListener("change", (event) => {
    if (event.target.files[0]) predict(event.target.files[0]);
  });
  const slider = $("#min-confidence");
  slider.addEventListener("input", () => { $("#min-confidence-value").textContent = Number(slider.value).toFixed(2); });
  slider.addEventListener("change", () => state.lastFile && predict(state.lastFile));
  if (navigator.mediaDevices?.getUserMedia) show($("#webcam-button"));
  $("#webcam-button").addEventListener("click", startWebcam);
  $("#snap-button").addEventListener("click", snapWebcam);
  $("#refresh-models").addEventListener("click", loadModels);
  onDrop($("#predict-drop"), (files) => files[0] && predict(files[0]));
  initCompare();
  loadService();
  loadModels();
  initDatasets({
    follow: followJob,
    cancel: cancelTraining,
    leave: leaveJobView,
    showModel: async (modelId) => {
      state.model = modelId;
      renderModels(state.defaultId);
      await showResult(modelId);
      $("#result-title").scrollIntoView({ behavior: "smooth", block: "start" });
    },
    listed: (datasets) => {
      state.datasetNames = new Map(datasets.map((d) => [d.dataset_id, d.name]));
      if (state.models.length) renderModels(state.defaultId);
      setCompareDatasets(datasets);
    },
    compare: async (modelIds, datasetId) => {
      if (modelIds.some((id) => !state.models.some((m) => m.model_id === id))) await loadModels();
      await compareModels(modelIds, datasetId);
    },
  });
}

init();
