"""Every export format of one served model, side by side in one run: file size, top-1 agreement with the
server and accuracy next to the server's on the model's test photos, and batch-1 latency in the format's
own runtime on this CPU (the figures each export's verification records in its metadata.json).

    .venv/bin/python bench/exports.py          # cats_dogs/train, efficientnet_lite0, 10 epochs

Trains through the service in-process, then builds each format as its export job does. The ONNX and
TorchScript rows are the single-file exports, checked within 1e-4 in the request.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, class_folders, report, train_in_process  # noqa: E402

from vision_trainer.jobs.inline import CallerRunsQueue  # noqa: E402
from vision_trainer.ml.converters import ConverterUnavailableError  # noqa: E402
from vision_trainer.ml.converters.bundle import ExportRefusedError  # noqa: E402
from vision_trainer.services import exports, training  # noqa: E402
from vision_trainer.services.context import Services  # noqa: E402
from vision_trainer.services.work import runner  # noqa: E402
from vision_trainer.settings import Settings  # noqa: E402


def bundle_row(services: Services, model_id: str, fmt: str) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        state = exports.request_export(services, CallerRunsQueue(), model_id, fmt)
        if state.job is not None:
            runner.run_job(services, state.job["job_id"])
        state = exports.request_export(services, CallerRunsQueue(), model_id, fmt)
    except (ConverterUnavailableError, ExportRefusedError, exports.ExportRefused) as exc:
        return {"format": fmt, "note": str(exc)[:120]}
    if state.path is None:
        return {"format": fmt, "note": "the export job failed; see its log"}
    import json
    import zipfile

    with zipfile.ZipFile(state.path) as bundle:
        check = json.loads(bundle.read("metadata.json"))["verification"]
        model_bytes = sum(i.file_size for i in bundle.infolist() if i.filename.startswith("model"))
    return {
        "format": fmt,
        "model MB": round(model_bytes / 2**20, 2),
        "zip MB": round(state.path.stat().st_size / 2**20, 2),
        "ran in its runtime": check["ran"],
        "photos": check["photos"],
        "top-1 agreement": check.get("top1_agreement"),
        "max prob diff": check.get("max_probability_difference"),
        "accuracy": check.get("accuracy"),
        "server accuracy": check.get("server_accuracy"),
        "latency ms (batch 1)": check.get("latency_ms"),
        "build s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default=",".join(exports.BUNDLE_FORMATS))
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    classes = class_folders(DATASETS / "cats_dogs" / "train")
    with tempfile.TemporaryDirectory() as tmp:
        services = Services.create(Settings(_env_file=None, data_dir=Path(tmp) / "data"))  # type: ignore[call-arg]
        try:
            options = training.TrainRequest(epochs=args.epochs, backbone="efficientnet_lite0")
            _, job = train_in_process(services, classes, options)
            model_id = job["model_id"]
            rows = []
            for fmt in ("onnx", "torchscript"):
                path = exports.export_file(services, model_id, fmt)  # type: ignore[arg-type]
                rows.append(
                    {"format": fmt, "model MB": round(path.stat().st_size / 2**20, 2), "ran in its runtime": True}
                )
            rows += [bundle_row(services, model_id, fmt) for fmt in args.formats.split(",")]
        finally:
            services.close()
    report(f"exports: one cats_dogs model ({job['metrics']['test_count']} test photos), efficientnet_lite0", rows)


if __name__ == "__main__":
    main()
