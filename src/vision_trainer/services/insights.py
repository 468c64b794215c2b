"""Dataset insights: a job that looks at every photo's cached features and says which labels look wrong,
which photos are copies of one another, which are like no class, how balanced the classes are, and what
the unlabelled photos probably are."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..ml.backbones import pretrained_backbone, resolve_backbone, weights_available
from ..ml.data import LabelledImage, stable_split
from ..ml.errors import UnknownBackboneError
from ..ml.extraction import plain_features
from ..ml.fit import single_threaded
from ..ml.hooks import TrainingHooks
from ..ml.images import open_image
from ..ml.insights import (
    InsightOptions,
    Insights,
    ProbeCvAccuracy,
    analyze,
    class_balance,
    duplicate_kind,
    image_fingerprint,
)
from ..ml.learning_curve import LearningCurve, advice
from ..ml.linear_probe import OutOfFold, out_of_fold
from ..ml.recipe import Compute, Recipe, recipe_field
from ..store import datasets as datasets_repo
from ..store import repository as repo
from ..store.tables import Job
from .backbones import AUTO, auto_candidates
from .context import Services
from .errors import NotFound
from .queue import JobQueue
from .snapshot import dataset_snapshot
from .submit import check_queue_room, queue_job
from .training import TrainRequest
from .views import iso

# One fixed backbone for near-duplicates and outliers, so similarity scores mean the same on every dataset;
# it is the one that always works offline, and the fastest. The out-of-fold heads (suspects, suggestions,
# learning curve) train on the best features the dataset has instead (``probe_backbone``).
INSIGHTS_BACKBONE = "efficientnet_lite0"
# Within this k-fold accuracy of the best, the cheaper candidate probes (ties never depend on timing, so a
# second analysis of the same version picks the same backbone).
PROBE_TIE = 0.005
FINGERPRINT_KEY = "pixels16"
RECOMMENDED_PER_CLASS = 20
SHOWN = 200  # longest list kept per kind (the page shows the top ones first)


class AnalyzeParams(BaseModel):
    """What an analysis job row stores (and the runner reads back): the backbone whose features are
    looked at, and the split whose sides near-duplicates are told apart by."""

    model_config = ConfigDict(extra="ignore")

    backbone: str = INSIGHTS_BACKBONE
    backbone_note: str = f"Analysis on {INSIGHTS_BACKBONE} features"
    # The backbone whose features the out-of-fold heads train on: the one the dataset's latest model used,
    # else ``auto`` (the candidate with the best k-fold accuracy); ``None`` (jobs queued before) = ``backbone``.
    probe_backbone: str | None = None
    probe_candidates: list[str] = []
    seed: int = recipe_field("seed")
    test_split: float = TrainRequest.model_fields["test_split"].default


def submit_analysis(services: Services, queue: JobQueue, dataset_id: str) -> dict[str, Any]:
    """Queue an analysis of the dataset's current version (a job like training; no model comes of it).

    Raises:
        NotFound: no such dataset.
        TooManyRequests: ``VT_MAX_QUEUED_JOBS`` jobs already wait.
    """
    snapshot = dataset_snapshot(services, dataset_id, unlabelled=True)
    check_queue_room(services)
    params = _analyze_params(services, dataset_id)
    return queue_job(
        services,
        queue,
        dataset_id=dataset_id,
        version=snapshot.version,
        class_names=snapshot.class_names,
        inputs=snapshot.inputs,
        params=params,
        kind="analyze",
    )


def _analyze_params(services: Services, dataset_id: str) -> AnalyzeParams:
    """Which features the analysis probes: the latest model's backbone (its weights still here), else auto."""
    allow = services.settings.download_weights
    with services.db.session() as session:
        models = datasets_repo.models_of(session, dataset_id=dataset_id)
    for model in models:
        try:
            spec = resolve_backbone(model.backbone)
        except UnknownBackboneError:  # a model imported with a backbone this server does not know
            continue
        if weights_available(spec, allow_download=allow):
            note = (
                f"Analysis on {INSIGHTS_BACKBONE} features; suspects on {spec.name}, the backbone of the latest model"
            )
            return AnalyzeParams(probe_backbone=spec.name, backbone_note=note)
        break
    candidates = auto_candidates(services.settings) or [INSIGHTS_BACKBONE]
    note = (
        f"Analysis on {INSIGHTS_BACKBONE} features; suspects on the best of {', '.join(candidates)} "
        "by cross-validated accuracy (no model of this dataset yet)"
    )
    return AnalyzeParams(probe_backbone=AUTO, probe_candidates=candidates, backbone_note=note)


def get_insights(services: Services, dataset_id: str) -> dict[str, Any]:
    """The latest insights. Raises NotFound (no dataset; ``no_insights`` before the first analysis)."""
    with services.db.session() as session:
        dataset = datasets_repo.get_dataset(session, dataset_id=dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset with id {dataset_id!r}; GET /datasets lists them")
        if not dataset.insights:
            raise NotFound(
                f"dataset {dataset_id} has not been analyzed yet; POST /datasets/{dataset_id}/analyze",
                code="no_insights",
            )
        stale = dataset.insights["dataset_version"] != dataset.version
        return {**dataset.insights, "current_version": dataset.version, "stale": stale}


def run_analysis(
    services: Services, job: Job, params: AnalyzeParams, compute: Compute, hooks: TrainingHooks
) -> dict[str, Any]:
    """Compute the insights of a job's snapshot and store them on the dataset. Returns a summary.

    Deterministic: the photos are taken in image-id order, the features come from the cache, the folds and
    draws are seeded and the heads fit on one torch thread, so the same version gives the same insights.
    """
    started = time.monotonic()
    spec = resolve_backbone(params.backbone)
    files = services.files
    inputs = sorted(job.inputs, key=lambda i: str(i["image_id"]))
    paths = files.dataset_images(job.dataset_id, [i["image_id"] for i in inputs])  # type: ignore[arg-type]
    present = [(i, path) for i, path in zip(inputs, paths) if path.is_file()]
    items = [LabelledImage(path, i["label"], i["sha256"], i["filename"]) for i, path in present]

    def features_on(name: str) -> np.ndarray:
        chosen = resolve_backbone(name)
        backbone = pretrained_backbone(chosen, allow_download=compute.allow_download)
        x, _ = plain_features(chosen, backbone, items, Recipe(seed=params.seed), compute, hooks, services.features)
        return x.cpu().numpy()

    full = features_on(spec.name)
    # Near-duplicates and outliers on the final features alone (their thresholds were measured there); the
    # probe gets everything its backbone gives (the final features and the pooled earlier stages).
    features = full[:, : spec.feature_size]
    labels = np.array([item.label for item in items], dtype=np.int64)
    with single_threaded():  # small matrices: one torch thread is faster, and a fixed count keeps sums exact
        probe_name, selection, probed = _probe_backbone(params, full, labels, len(job.class_names), features_on)
        probe = full if probe_name == spec.name else features_on(probe_name)
        hooks.progress("evaluating", 0, 1, None)
        fingerprints = np.stack([_fingerprint(services, item) for item in items]) if items else None
        found = analyze(
            features,
            labels,
            len(job.class_names),
            fingerprints=fingerprints,
            probe_features=probe,
            probe_out_of_fold=probed,
        )
    insights = _view(job, params, present, items, found)
    insights.update(probe_backbone=probe_name, backbone_selection=selection)
    insights["seconds"] = round(time.monotonic() - started, 3)
    with services.db.session() as session:
        dataset = datasets_repo.get_dataset(session, dataset_id=job.dataset_id, for_update=True)  # type: ignore[arg-type]
        if dataset is not None:
            dataset.insights = insights
    hooks.log(
        f"Insights: {len(insights['suspect_labels'])} suspect label(s) (on {probe_name} features), "
        f"{len(insights['near_duplicates'])} near-duplicate group(s), {len(insights['outliers'])} outlier(s), "
        f"{len(insights['suggestions'])} suggestion(s) for unlabelled photos, in {insights['seconds']:.2f} s"
    )
    return {
        "images": len(items),
        "suspects": len(insights["suspect_labels"]),
        "near_duplicates": len(insights["near_duplicates"]),
        "outliers": len(insights["outliers"]),
        "cv_accuracy": insights["cv_accuracy"],
        "probe_backbone": probe_name,
    }


def _probe_backbone(
    params: AnalyzeParams, features: np.ndarray, labels: np.ndarray, num_classes: int, features_on: Any
) -> tuple[str, list[dict[str, Any]] | None, OutOfFold | None]:
    """The backbone the out-of-fold heads train on; with ``auto`` also every candidate's k-fold accuracy and
    the winner's out-of-fold result (``analyze`` reuses it)."""
    if params.probe_backbone is None:
        return params.backbone, None, None
    if params.probe_backbone != AUTO:
        return params.probe_backbone, None, None
    labelled = labels >= 0
    if len(np.unique(labels[labelled])) < 2 or len(params.probe_candidates) < 2:
        return (params.probe_candidates or [params.backbone])[0], None, None
    options = InsightOptions()
    results: list[tuple[str, float, OutOfFold]] = []
    for name in params.probe_candidates:
        x = features if name == params.backbone else features_on(name)
        result = out_of_fold(
            x[labelled], labels[labelled], num_classes, folds=options.folds, seed=options.seed, head=options.head
        )
        results.append((name, ProbeCvAccuracy.of(result.fold_accuracies(labels[labelled])).mean, result))
    best = max(score for _, score, _ in results)
    chosen = next(r for r in results if r[1] >= best - PROBE_TIE)  # cheapest first
    return chosen[0], [{"backbone": name, "cv_accuracy": score} for name, score, _ in results], chosen[2]


def _fingerprint(services: Services, item: LabelledImage) -> np.ndarray:
    """The photo's pixel fingerprint, computed once per content and kept in the feature cache."""
    key = f"{FINGERPRINT_KEY}/{item.sha256}/grey16"
    cached = services.features.get(key)
    if cached is not None:
        return cached
    value = image_fingerprint(open_image(item.path, draft_size=64)).astype(np.float32)
    services.features.put(key, value)
    return value


def _view(
    job: Job,
    params: AnalyzeParams,
    present: list[tuple[dict[str, Any], Any]],
    items: list[LabelledImage],
    found: Insights,
) -> dict[str, Any]:
    names = job.class_names
    ids = [i["image_id"] for i, _ in present]

    def label(index: int) -> str | None:
        return names[index] if index >= 0 else None

    labelled = [item for item in items if item.label >= 0]
    split = stable_split(labelled, test_fraction=params.test_split, seed=params.seed)
    in_test = {id(item) for item in split.test}
    counts = {name: int(sum(item.label == n for item in items)) for n, name in enumerate(names)}
    balance = class_balance(counts, recommended=RECOMMENDED_PER_CLASS)
    duplicates = []
    for group in found.duplicates[:SHOWN]:
        members = list(group.members)
        member_labels = [items[m].label if items[m].label >= 0 else None for m in members]
        kind = duplicate_kind(member_labels, [id(items[m]) in in_test for m in members])
        duplicates.append(
            {
                "image_ids": [ids[m] for m in members],
                "filenames": [items[m].name for m in members],
                "labels": [label(items[m].label) for m in members],
                "similarity": round(group.similarity, 4),
                "kind": kind,
            }
        )
    order = {"cross_class": 0, "cross_split": 1, "same_class": 2}
    duplicates.sort(key=lambda d: (order[str(d["kind"])], -float(d["similarity"])))  # type: ignore[arg-type]
    return {
        "dataset_version": job.dataset_version,
        "analyzed_at": iso(repo.now()),
        "job_id": job.id,
        "backbone": params.backbone,
        "image_count": len(items),
        "suspect_labels": [
            {
                "image_id": ids[s.index],
                "filename": items[s.index].name,
                "label": label(s.label),
                "suggested_label": label(s.suggested_label),
                "confidence": s.confidence,
                "score": s.score,
            }
            for s in found.suspects[:SHOWN]
        ],
        "near_duplicates": duplicates,
        "outliers": [
            {
                "image_id": ids[o.index],
                "filename": items[o.index].name,
                "label": label(items[o.index].label),
                "score": o.score,
            }
            for o in found.outliers[:SHOWN]
        ],
        "class_balance": {
            "counts": balance.counts,
            "recommended_per_class": RECOMMENDED_PER_CLASS,
            "warnings": [{"code": w.code, "message": w.message, "classes": list(w.classes)} for w in balance.warnings],
        },
        "suggestions": [
            {
                "image_id": ids[s.index],
                "filename": items[s.index].name,
                "suggested_label": label(s.suggested_label),
                "confidence": s.confidence,
            }
            for s in found.suggestions[:SHOWN]
        ],
        "cv_accuracy": None
        if found.cv_accuracy is None
        else {"mean": found.cv_accuracy.mean, "std": found.cv_accuracy.std, "folds": list(found.cv_accuracy.folds)},
        "learning_curve": _curve_view(found.learning_curve, names),
        "warnings": [*found.warnings, *(w.message for w in balance.warnings)],
    }


def _curve_view(curve: LearningCurve | None, names: list[str]) -> dict[str, Any] | None:
    if curve is None:
        return None
    return {
        "overall": [{"photos": n, "accuracy": a} for n, a in curve.overall],
        "per_class": {
            names[c]: [{"photos": n, "recall": r} for n, r in points] for c, points in curve.per_class.items()
        },
        "projection": [{"photos": n, "accuracy": a} for n, a in curve.projection],
        "advice": advice(curve, names),
    }
