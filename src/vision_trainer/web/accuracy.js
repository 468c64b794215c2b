// Accuracy with its uncertainty: the 95 % interval, the "rough" warning and the cross-validated
// accuracy, as every view that shows a model's test accuracy writes them. Model details are read
// once per model: the list answers carry only the accuracy itself.

import { getJson } from "./api.js";
import { make, percent } from "./ui.js";

const details = new Map(); // model id -> Promise of GET /models/{id}

/** The full model (metrics with test_accuracy_ci, cv_accuracy, warnings), read once per model. */
export function modelDetail(modelId) {
  if (!details.has(modelId)) {
    const pending = getJson(`/models/${modelId}`);
    pending.catch(() => details.delete(modelId)); // a failed read may be tried again later
    details.set(modelId, pending);
  }
  return details.get(modelId);
}

export function forgetModel(modelId) {
  details.delete(modelId);
}

/** "38–96 %": a 95 % interval [low, high] of a proportion. */
export function intervalText(ci) {
  if (!Array.isArray(ci) || ci.length !== 2) return "";
  return `${(ci[0] * 100).toFixed(0)}–${(ci[1] * 100).toFixed(0)}\u00a0%`;
}

/** "95 % interval 38–96 %", or "" when the model predates intervals. */
export function ciText(ci) {
  const text = intervalText(ci);
  return text ? `95\u00a0% interval ${text}` : "";
}

/** "90.0 % ± 12.2 over 5 folds" for metrics.cv_accuracy {mean, std, folds}. */
export function cvText(cv) {
  if (!cv || cv.mean === undefined || cv.mean === null) return "";
  const folds = Array.isArray(cv.folds) ? ` over ${cv.folds.length} folds` : "";
  return `${percent(cv.mean)} ± ${((cv.std ?? 0) * 100).toFixed(1)}${folds}`;
}

/** The warning that the test accuracy is rough (few test photos), when the model has one. */
export function roughWarning(metrics) {
  return (metrics?.warnings || []).find((w) => /rough/i.test(w)) || "";
}

/**
 * A small bar from 0 to 100 % with the interval shaded and the accuracy marked; `label` names it for
 * screen readers.
 */
export function intervalBar(value, ci, label) {
  const bar = make("span", { className: "ci-bar" }, { role: "img", "aria-label": `${label}: ${percent(value)}, ${ciText(ci)}` });
  if (Array.isArray(ci)) {
    const range = make("span", { className: "ci-range" });
    range.style.left = `${(ci[0] * 100).toFixed(1)}%`;
    range.style.width = `${((ci[1] - ci[0]) * 100).toFixed(1)}%`;
    bar.append(range);
  }
  if (value !== null && value !== undefined) {
    const mark = make("span", { className: "ci-mark" });
    mark.style.left = `${(value * 100).toFixed(1)}%`;
    bar.append(mark);
  }
  return bar;
}
