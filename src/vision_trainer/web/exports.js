// Model exports from the model list: ONNX and TorchScript download at once; the other formats are built
// by an export job (the first request answers 202 with it), followed here until the verified zip is ready.
import { ApiError, fetchOk, getJson, saveBlob } from "./api.js";

export const EXPORT_FORMATS = [
  ["onnx", "ONNX", "onnx"],
  ["torchscript", "TorchScript", "pt"],
  ["tflite", "LiteRT (TFLite)", "zip"],
  ["tflite-int8", "LiteRT int8", "zip"],
  ["openvino", "OpenVINO", "zip"],
  ["onnx-int8", "ONNX int8", "zip"],
  ["coreml", "Core ML", "zip"],
];

const POLL_MS = 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Download `format` of a model; `onStatus(text)` hears about a conversion job while it runs. */
export async function exportModel(modelId, format, onStatus) {
  const [, label, extension] = EXPORT_FORMATS.find(([name]) => name === format);
  const path = `/models/${modelId}/export?format=${encodeURIComponent(format)}`;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const response = await fetchOk(path);
    if (response.status !== 202) {
      saveBlob(await response.blob(), extension === "zip" ? `${modelId}-${format}.zip` : `${modelId}.${extension}`);
      return;
    }
    const job = await response.json();
    await followExport(job.job_id, label, onStatus);
  }
  throw new Error(`the ${label} export did not become ready`);
}

async function followExport(jobId, label, onStatus) {
  for (;;) {
    const job = await getJson(`/jobs/${jobId}`);
    const { phase, done, total } = job.progress || {};
    onStatus(`${label}: ${phase || job.status}${total ? ` ${done}/${total}` : ""}`);
    if (job.status === "succeeded") return;
    if (["failed", "cancelled"].includes(job.status)) {
      throw new ApiError(422, { detail: job.error || `the ${label} export was ${job.status}`, code: "export_failed" });
    }
    await sleep(POLL_MS);
  }
}
