"""The ``train`` kind: a head on the frozen backbone's features of a dataset's snapshot, saved as a model."""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ...ml.backbones import resolve_backbone
from ...ml.checkpoint import build_head_checkpoint, save_checkpoint
from ...ml.data import LabelledImage, Split, drop_duplicates, stable_split
from ...ml.errors import TrainingCancelled
from ...ml.recipe import Compute
from ...ml.training import TrainResult, auto_backbone, train_classifier
from ...store import datasets as datasets_repo
from ...store import repository as repo
from ...store.files import remove_tree
from ...store.tables import Job
from ..backbones import AUTO, auto_candidates
from ..context import Services
from ..novelty import model_novelty
from ..training import TrainParams
from ..work.kind import JobContext

log = logging.getLogger(__name__)

Context = JobContext[TrainParams]


class TrainKind:
    name = "train"
    params = TrainParams
    noun = "Training"

    def inputs_dir(self, services: Services, job: Job) -> Path | None:
        # v1 jobs (no dataset) kept their upload in a folder of their own
        return services.files.dataset_dir(job.dataset_id) if job.dataset_id else services.files.job_dir(job.id)

    def opening_lines(self, params: TrainParams) -> list[str]:
        lines = [params.backbone_note]
        if skipped := params.skipped_files:
            lines.append(
                f"Skipped {len(skipped)} unusable file(s): "
                + "; ".join(_where(e) for e in skipped[:20])
                + (f"; and {len(skipped) - 20} more" if len(skipped) > 20 else "")
            )
        return lines

    def run(self, context: Context) -> str:
        return _train_and_store(context)

    def final_message(self, job: dict[str, Any]) -> str:
        return f"Training succeeded: test accuracy {job['metrics']['test_accuracy']:.4f}"


def _where(error: dict[str, Any]) -> str:
    where = f"{error['field']}[{error['index']}] " if "field" in error and "index" in error else ""
    return where + str(error.get("detail", error.get("filename", "")))


def compute_options(services: Services) -> Compute:
    """Where this server's jobs compute, from its settings."""
    return Compute(
        runtime=services.runtime,
        num_workers=services.settings.num_workers,
        allow_download=services.settings.download_weights,
    )


def _items(context: Context) -> list[LabelledImage]:
    """The job's photos: a dataset's (v2) or the job's own upload folder (jobs queued by v1)."""
    job, files = context.job, context.services.files
    if job.dataset_id is None:
        job_dir = files.job_dir(job.id)
        items = [LabelledImage(job_dir / i["file"], i["label"], i["sha256"], i.get("filename", "")) for i in job.inputs]
        return sorted(items, key=lambda item: (item.label, item.sha256))
    paths = files.dataset_images(job.dataset_id, [i["image_id"] for i in job.inputs])
    items = [LabelledImage(path, i["label"], i["sha256"], i.get("filename", "")) for path, i in zip(paths, job.inputs)]
    present = [item for item in items if item.path.is_file()]
    if len(present) < len(items):
        context.log(
            f"{len(items) - len(present)} photo(s) were removed from the dataset after this job was "
            "queued; training without them"
        )
    # In content order: a dataset lists the photos of one upload by their random ids, and the order the
    # head's SGD meets them in changed the model (flowers5: test accuracy 0.758-0.792 for one request).
    return sorted(present, key=lambda item: (item.label, item.sha256))


def _train_and_store(context: Context) -> str:
    services, job, params = context.services, context.job, context.params
    unique, removed = drop_duplicates(_items(context))
    removed += params.duplicates_removed
    if removed:
        context.log(f"Dropped {removed} exact duplicate image(s)")
    split = _keep_copies_together(context, stable_split(unique, test_fraction=params.test_split, seed=params.seed))
    if job.dataset_id is not None:
        context.log(f"Dataset {job.dataset_id} version {job.dataset_version}")
    context.log(f"Split: {len(split.train)} train / {len(split.test)} test images")
    recipe, compute, hooks = params.recipe(), compute_options(services), context.hooks()
    selection = None
    if params.backbone == AUTO:
        specs = [resolve_backbone(name) for name in auto_candidates(services.settings)]
        spec, selection, why = auto_backbone(
            specs, split, job.class_names, recipe, compute, hooks, cache=services.features
        )
        context.log(why)
        params = context.params = params.model_copy(update={"backbone": spec.name, "backbone_requested": AUTO})
    spec = resolve_backbone(params.backbone)
    result = train_classifier(spec, split, job.class_names, recipe, compute, hooks, cache=services.features)
    if selection is not None:
        result.metrics["backbone_selection"] = selection
    context.reporter.progress("saving", 0, 1, params.epochs)
    if context.reporter.should_stop():
        raise TrainingCancelled()
    return _save_model(context, result, removed=removed, split=split)


def _keep_copies_together(context: Context, split: Split) -> Split:
    """Near-duplicates found by the dataset's last analysis stay on one side: a test photo with a copy in
    the training photos trains too, so the test accuracy is not flattered by photos seen in training."""
    job = context.job
    if job.dataset_id is None:
        return split
    with context.services.db.session() as session:
        dataset = datasets_repo.get_dataset(session, dataset_id=job.dataset_id)
        groups = (dataset.insights or {}).get("near_duplicates", []) if dataset is not None else []
    train_ids = {item.path.stem for item in split.train}
    moved = {image_id for group in groups if set(group["image_ids"]) & train_ids for image_id in group["image_ids"]}
    leaving = [item for item in split.test if item.path.stem in moved]
    if not leaving or len(leaving) == len(split.test):
        return split
    context.log(f"{len(leaving)} test photo(s) have a near-duplicate among the training photos: they train too")
    return Split(train=[*split.train, *leaving], test=[item for item in split.test if item.path.stem not in moved])


def _save_model(context: Context, result: TrainResult, *, removed: int, split: Split) -> str:
    """Write the head, then in one transaction: the model row, the job's success and its last events,
    only while the claim still holds the job. So a job has one model, or none."""
    services, job, params = context.services, context.job, context.params
    spec = resolve_backbone(params.backbone)
    model_id = uuid.uuid4().hex
    path = services.files.head_path(model_id)
    # --- novelty (services.novelty): the training photos' features, so predictions can say "unknown";
    # also sets result.metrics["novelty"] (how many test photos it would flag) before the metrics are stored.
    novelty = model_novelty(
        services,
        spec,
        split.train,
        split.test,
        result.metrics,
        params.recipe(),
        compute_options(services),
        features=result.novelty_features,
    )
    # --- end of novelty
    save_checkpoint(
        path,
        {
            **build_head_checkpoint(
                head_state_dict=result.head_state,
                class_names=job.class_names,
                backbone=spec.name,
                backbone_fingerprint=result.backbone_fingerprint,
                preprocessing=spec.preprocessing(),
                temperature=result.temperature,
                metrics=result.metrics,
                feature_stages=result.feature_stages,
                tuned_state_dict=result.tuned_state,
                tune_cut=result.tune_cut,
            ),
            **novelty,
        },
    )
    stored = params.model_dump()

    def add_model(session: Session) -> None:
        repo.create_model(
            session,
            id=model_id,
            job_id=job.id,
            dataset_id=job.dataset_id,
            name=params.name or f"{' vs '.join(job.class_names)[:150]} ({spec.name})",
            class_names=job.class_names,
            backbone=spec.name,
            params={k: v for k, v in stored.items() if k != "name"},
            data=_model_data(job, params, result, split, removed),
            history=result.history,
            metrics=result.metrics,
        )

    duration = max(context.elapsed(), 1e-9)
    try:
        status = context.succeed(
            line=f"Saved model {model_id}",
            metrics=result.metrics,
            model_id=model_id,
            also=add_model,
            images_per_s=len(job.inputs) / duration,
        )
    except BaseException:
        remove_tree(path.parent)
        raise
    log.info("job %s: saved model %s", job.id, model_id)
    return status


def _model_data(job: Job, params: TrainParams, result: TrainResult, split: Split, removed: int) -> dict[str, Any]:
    counts = {name: 0 for name in job.class_names}
    for item in job.inputs:
        counts[job.class_names[item["label"]]] += 1
    return {
        "dataset_id": job.dataset_id,
        "dataset_version": job.dataset_version,
        "per_class_counts": counts,
        "split_seed": params.seed,
        "content_hash": _content_hash(job.inputs),
        "duplicates_removed": removed,
        "train_count": len(split.train),
        "validation_count": result.metrics["validation_count"],
        "test_count": len(split.test),
        "train_image_ids": [item.path.stem for item in result.fit_items],
        "validation_image_ids": [item.path.stem for item in result.validation_items],
        "test_image_ids": [item.path.stem for item in split.test],
        "test_images": [
            {"image_id": item.path.stem, "filename": item.name, "label": job.class_names[item.label]}
            for item in split.test
        ],
    }


def _content_hash(inputs: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for item in sorted(inputs, key=lambda i: (i["label"], i["sha256"])):
        digest.update(f"{item['label']}:{item['sha256']}\n".encode())
    return digest.hexdigest()


KIND = TrainKind()
