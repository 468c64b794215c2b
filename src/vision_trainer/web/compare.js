// The compare view: two or more models judged on the same photos of a dataset (those none of them
// trained on): accuracy with its interval, per-class F1, confusion matrices, and the paired test's
// verdict in plain words.

import { postForm } from "./api.js";
import { ciText, intervalBar } from "./accuracy.js";
import { $, describe, fillConfusion, make, percent, plural, setError, show } from "./ui.js";

const view = {
  models: [],
  datasets: [],
  checked: new Set(),
};

/** The models that can be ticked (the model list, newest first). */
export function setCompareModels(models) {
  view.models = models;
  const known = new Set(models.map((m) => m.model_id));
  view.checked = new Set([...view.checked].filter((id) => known.has(id)));
  const list = $("#compare-models");
  if (!models.length) {
    list.replaceChildren(make("li", { className: "muted", textContent: "Train two models to compare them here." }));
    return;
  }
  list.replaceChildren(...models.map((model) => {
    const box = make("input", { type: "checkbox", value: model.model_id, checked: view.checked.has(model.model_id) },
      { "data-testid": "compare-model-checkbox" });
    box.addEventListener("change", () => {
      if (box.checked) view.checked.add(model.model_id);
      else view.checked.delete(model.model_id);
    });
    const label = make("label", { className: "compare-pick" });
    const version = model.dataset_version ? ` · version ${model.dataset_version}` : "";
    label.append(box, make("span", { textContent: model.name }),
      make("span", { className: "muted small", textContent: `${percent(model.metrics?.test_accuracy)} test · ${model.backbone}${version}` }));
    const item = make("li");
    item.append(label);
    return item;
  }));
}

/** The datasets whose photos the models can be compared on. */
export function setCompareDatasets(datasets) {
  view.datasets = datasets;
  const select = $("#compare-dataset");
  const chosen = select.value;
  select.replaceChildren(...datasets.map((d) => make("option", { value: d.dataset_id, textContent: `${d.name} (${plural(d.image_count, "photo")})` })));
  if (datasets.some((d) => d.dataset_id === chosen)) select.value = chosen;
}

/** Tick `modelIds`, choose `datasetId` and compare them (from a dataset's "Compare these models"). */
export async function compareModels(modelIds, datasetId) {
  view.checked = new Set(modelIds);
  setCompareModels(view.models);
  if (view.datasets.some((d) => d.dataset_id === datasetId)) $("#compare-dataset").value = datasetId;
  $("#compare-view").scrollIntoView({ block: "start" });
  await compare();
}

export function initCompare() {
  $("#compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    compare();
  });
}

async function compare() {
  const ids = view.models.map((m) => m.model_id).filter((id) => view.checked.has(id));
  const datasetId = $("#compare-dataset").value;
  setError($("#compare-error"), "");
  if (ids.length < 2) {
    setError($("#compare-error"), "Tick two or more models to compare.");
    return;
  }
  if (!datasetId) {
    setError($("#compare-error"), "Choose a dataset whose photos the models are judged on.");
    return;
  }
  const form = new FormData();
  ids.forEach((id) => form.append("model_ids", id));
  form.append("dataset_id", datasetId);
  const button = $("#compare-button");
  button.disabled = true;
  $("#compare-status").textContent = `Comparing ${plural(ids.length, "model")}…`;
  try {
    renderResult(await postForm("/models/compare", form), datasetId);
    $("#compare-status").textContent = "";
  } catch (error) {
    $("#compare-status").textContent = "";
    setError($("#compare-error"), describe(error));
  } finally {
    button.disabled = false;
  }
}

// --- the result --------------------------------------------------------------------------------------

const letter = (i) => String.fromCharCode(65 + i);

function renderResult(result, datasetId) {
  const dataset = view.datasets.find((d) => d.dataset_id === datasetId);
  const names = new Map(result.models.map((m, i) => [m.model_id, `${letter(i)} “${m.name}”`]));
  const box = $("#compare-result");
  const intro = make("p", { className: "compare-intro" }, { "data-testid": "compare-summary" });
  intro.append(`Judged on ${plural(result.photos, "photo")} of `, make("strong", { textContent: dataset ? `“${dataset.name}”` : "the dataset" }),
    " that none of the models trained on.", result.photos < 30 ? " That is few: the intervals are wide and only a large difference shows." : "");
  const verdicts = make("ul", { className: "verdicts" }, { "data-testid": "compare-verdicts" });
  verdicts.append(...result.pairs.map((pair) => verdict(pair, names, result.photos)));
  const cards = make("div", { className: "compare-models-result" });
  cards.append(...result.models.map((model, i) => modelCard(model, i, result.class_names)));
  box.replaceChildren(intro, make("h3", { textContent: "Is the difference real?" }), verdicts,
    make("h3", { textContent: "Accuracy (with its 95\u00a0% interval)" }), cards,
    make("h3", { textContent: "F1 per class" }), f1Table(result));
  show(box);
}

/** One pair's paired test, in words: who is better, how often each alone was right, and whether that could be chance. */
function verdict(pair, names, photos) {
  const a = names.get(pair.model_a), b = names.get(pair.model_b);
  const item = make("li", { className: pair.significant ? "verdict real" : "verdict" },
    { "data-testid": "compare-verdict", "data-significant": String(pair.significant) });
  const disagree = pair.only_a_right + pair.only_b_right;
  let headline;
  if (pair.significant) {
    const [better, worse] = pair.only_a_right > pair.only_b_right ? [a, b] : [b, a];
    headline = `${better} is better than ${worse}: the difference is unlikely to be chance (p = ${pair.p_value.toPrecision(2)}).`;
  } else {
    headline = `No real difference between ${a} and ${b} on these ${plural(photos, "photo")}: `
      + `it could well be chance (p = ${pair.p_value.toPrecision(2)}). More photos would tell them apart.`;
  }
  const detail = disagree
    ? `Where they disagree, only ${a} was right on ${plural(pair.only_a_right, "photo")} and only ${b} on ${plural(pair.only_b_right, "photo")}.`
    : "They got exactly the same photos right.";
  item.append(make("strong", { textContent: headline }), " ", make("span", { className: "muted", textContent: detail }));
  return item;
}

function modelCard(model, index, classNames) {
  const card = make("article", { className: "compare-card" }, { "data-testid": "compare-model", "data-model-id": model.model_id });
  const title = make("h4");
  title.append(make("span", { className: "letter", textContent: letter(index) }), make("span", { textContent: model.name }));
  const version = model.dataset_version ? ` · trained on version ${model.dataset_version}` : "";
  const accuracy = make("p", { className: "accuracy" });
  accuracy.append(make("span", { className: "big", textContent: percent(model.accuracy) }, { "data-testid": "compare-accuracy" }), " ",
    make("span", { className: "muted small", textContent: model.accuracy_ci ? `(${ciText(model.accuracy_ci)})` : "" },
      { "data-testid": "compare-accuracy-ci" }));
  const matrix = make("table", { className: "table heatmap" }, { "data-testid": "compare-confusion" });
  fillConfusion(matrix, classNames, model.confusion_matrix);
  card.append(title, make("span", { className: "muted small", textContent: `${model.backbone}${version}` }), accuracy,
    intervalBar(model.accuracy, model.accuracy_ci, `${letter(index)} accuracy`),
    make("p", { className: "muted small matrix-note", textContent: "Confusion matrix (rows: true class; columns: predicted)" }), matrix);
  return card;
}

/** Classes as rows, models as columns; the best F1 of each row is marked. */
function f1Table(result) {
  const table = make("table", { className: "table f1-table" }, { "data-testid": "compare-f1" });
  const head = table.createTHead().insertRow();
  head.append(make("th", { scope: "col", textContent: "class" }));
  result.models.forEach((m, i) => head.append(make("th", { scope: "col", textContent: letter(i), title: m.name })));
  head.append(make("th", { scope: "col", textContent: "photos" }));
  const body = table.createTBody();
  for (const label of result.class_names) {
    const row = body.insertRow();
    row.append(make("th", { scope: "row", textContent: label }));
    const scores = result.models.map((m) => m.per_class?.[label]?.f1 ?? null);
    const best = Math.max(...scores.filter((s) => s !== null));
    scores.forEach((score) => {
      const cell = row.insertCell();
      cell.textContent = percent(score);
      if (score === best && scores.filter((s) => s === best).length < scores.length) cell.className = "best";
    });
    row.insertCell().textContent = result.models[0].per_class?.[label]?.support ?? "";
  }
  return table;
}
