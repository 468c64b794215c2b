"""Model registry use cases: list, inspect, rename, delete, default alias, stored images, import."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from torch import nn

from ..ml.backbones import pretrained_backbone, resolve_backbone
from ..ml.checkpoint import (
    build_checkpoint,
    check_temperature,
    full_checkpoint,
    load_checkpoint,
    load_head_checkpoint,
    save_checkpoint,
)
from ..ml.errors import CheckpointError, UnknownBackboneError, WeightsUnavailableError
from ..ml.predictor import Predictor
from ..ml.runtime import RuntimeOptions
from ..ml.training import backbone_fingerprint
from ..store import datasets as datasets_repo
from ..store import repository as repo
from ..store.files import remove_tree
from ..store.tables import Model
from .context import Services
from .errors import InvalidRequest, NotFound, Unavailable
from .storage import check_room, forget_usage
from .uploads import check_labels
from .views import model_summary, model_view


def _require(session: Any, model_id: str) -> Model:
    model = repo.get_model(session, model_id=model_id)
    if model is None:
        raise NotFound(f"no model with id {model_id!r}; GET /models lists them")
    return model


def list_models(services: Services, *, limit: int, offset: int) -> dict[str, Any]:
    with services.db.session() as session:
        models, count = repo.list_models(session, limit=limit, offset=offset)
        return {"items": [model_summary(m) for m in models], "count": count}


def get_model(services: Services, model_id: str) -> dict[str, Any]:
    """Everything we know about one model. Raises NotFound."""
    with services.db.session() as session:
        return model_view(_require(session, model_id))


def rename_model(services: Services, model_id: str, name: str) -> dict[str, Any]:
    """Raises NotFound, InvalidRequest (empty name)."""
    name = name.strip()
    if not name:
        raise InvalidRequest("name must not be empty", code="invalid_name")
    with services.db.session() as session:
        model = _require(session, model_id)
        model.name = name
        return model_view(model)


def delete_model(services: Services, model_id: str) -> None:
    """Remove the row (and a default alias pointing at it), then its files and its cached predictor."""
    with services.db.session() as session:
        _require(session, model_id)
        repo.delete_model(session, model_id=model_id)
    services.predictors.drop(model_id)
    remove_tree(services.files.model_dir(model_id))
    forget_usage(services)


def set_default_model(services: Services, model_id: str) -> dict[str, Any]:
    """Point the ``default`` alias at a model. Raises NotFound."""
    with services.db.session() as session:
        model = _require(session, model_id)
        repo.set_alias(session, name=repo.DEFAULT_ALIAS, model_id=model_id)
        return model_summary(model)


def get_default_model(services: Services) -> dict[str, Any]:
    """The model the ``default`` alias points at. Raises NotFound when none is set."""
    with services.db.session() as session:
        model_id = repo.get_alias(session, name=repo.DEFAULT_ALIAS)
        if model_id is None:
            raise NotFound('no default model is set; PUT /models/default with {"model_id"}', code="no_default")
        return model_summary(_require(session, model_id))


def model_checkpoint(services: Services, model_id: str) -> dict[str, Any]:
    """The model's full checkpoint dict (format 1, seed-loadable): read from its file (v1 and imported
    models), or built from its stored head and the shared backbone's weights. Raises NotFound."""
    get_model(services, model_id)
    head = services.files.head_path(model_id)
    if head.is_file():
        stored = load_head_checkpoint(head)
        backbone = shared_backbone(services, stored)
        return full_checkpoint(stored, backbone.state_dict())
    path = services.files.checkpoint_path(model_id)
    if not path.is_file():
        raise NotFound(f"the checkpoint file of model {model_id} is missing from the data dir")
    return load_checkpoint(path)


def shared_backbone(services: Services, head: dict[str, Any]) -> nn.Module:
    """The process's frozen pretrained backbone a stored head was trained on.

    Raises:
        Unavailable: its weights are not available here, or they are not the ones the head was trained on.
    """
    spec = resolve_backbone(head["backbone"])
    try:
        backbone = pretrained_backbone(spec, allow_download=services.settings.download_weights)
    except WeightsUnavailableError as exc:
        raise Unavailable(
            f"this model needs {spec.name}'s pretrained weights: {exc}", code="weights_unavailable"
        ) from None
    if backbone_fingerprint(spec, backbone) != head["backbone_fingerprint"]:
        raise Unavailable(
            f"this model was trained on other {spec.name} weights ({head['backbone_fingerprint']}) than the ones "
            f"here ({backbone_fingerprint(spec, backbone)}); put those weights back or train again",
            code="weights_unavailable",
        )
    return backbone


def checkpoint_file(services: Services, model_id: str) -> tuple[Path, bool]:
    """A file holding the model's full ``trained_model.pth``, and whether it is a temporary one the
    caller removes after sending it. Raises NotFound."""
    get_model(services, model_id)  # NotFound first, whatever the id looks like
    if not services.files.head_path(model_id).is_file():
        path = services.files.checkpoint_path(model_id)
        if not path.is_file():
            raise NotFound(f"the checkpoint file of model {model_id} is missing from the data dir")
        return path, False
    checkpoint = model_checkpoint(services, model_id)
    path = services.files.temp_file(".pth")
    try:
        save_checkpoint(path, checkpoint)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, True


def _stored_images(session: Any, services: Services, model: Model) -> dict[str, Path]:
    """``{image_id: path}`` of the photos the model was trained and tested on: its dataset's (v2), or the
    upload folder of the job that trained it (v1). Empty for imported models and deleted datasets/jobs."""
    if model.dataset_id is not None:
        ids = [
            *model.data.get("train_image_ids", []),
            *model.data.get("validation_image_ids", []),
            *model.data.get("test_image_ids", []),
        ]
        found = [image.id for image in datasets_repo.get_images(session, dataset_id=model.dataset_id, image_ids=ids)]
        return dict(zip(found, services.files.dataset_images(model.dataset_id, found)))
    job = repo.get_job(session, job_id=model.job_id) if model.job_id else None
    if job is None or job.dataset_id is not None:
        return {}
    return {Path(item["file"]).stem: services.files.inside("jobs", job.id, item["file"]) for item in job.inputs}


def model_image(services: Services, model_id: str, image_id: str) -> Path:
    """A stored training or test image of the model. Raises NotFound."""
    with services.db.session() as session:
        stored = _stored_images(session, services, _require(session, model_id))
    if image_id not in stored:
        raise NotFound(
            f"model {model_id} has no stored image {image_id!r} (imported models and deleted datasets have none)"
        )
    if not stored[image_id].is_file():
        raise NotFound(f"image {image_id} is missing from the data dir")
    return stored[image_id]


def stored_test_images(services: Services, model_id: str, limit: int) -> list[Path]:
    """Up to ``limit`` of the model's stored test images that are still on disk (none for imported models)."""
    with services.db.session() as session:
        model = _require(session, model_id)
        stored = _stored_images(session, services, model)
        ids = [i for i in model.data.get("test_image_ids", []) if i in stored]
    return [path for path in (stored[i] for i in ids) if path.is_file()][:limit]


def import_model(
    services: Services, path: Path, *, filename: str, name: str | None = None, backbone: str | None = None
) -> dict[str, Any]:
    """Register a ``trained_model.pth`` made elsewhere (ours, or the seed's two-key format).

    It is read with ``weights_only=True`` (a pickle that carries code is refused), its weights are
    checked against the backbone, and only then written, in our format, under a new model id.

    Args:
        path: the uploaded file, already on disk (the caller streamed it there and removes it).

    Raises:
        InvalidRequest: unreadable, malicious or mismatched checkpoints, bad class names, unknown backbone.
        InsufficientStorage: the stored data is, or with this file would be, over VT_MAX_DATA_MB.
    """
    _check_import_room(services, path)
    try:
        checkpoint = load_checkpoint(
            path, label=repr(filename or "the file"), max_total_bytes=services.settings.max_file_bytes
        )
        named = backbone or checkpoint.get("backbone") or "resnet18"
        if not isinstance(named, str):
            raise CheckpointError(f"backbone must be a name, got {type(named).__name__}")
        spec = resolve_backbone(named)
        temperature = check_temperature(checkpoint.get("temperature"))
    except CheckpointError as exc:
        raise InvalidRequest(str(exc), code=exc.code) from None
    except UnknownBackboneError as exc:
        raise InvalidRequest(f"{filename!r}: {exc}", code=exc.code) from None
    names = checkpoint["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidRequest("class_names must be a list of strings", code="invalid_checkpoint")
    class_names = check_labels(names, max_classes=services.settings.max_classes)
    checkpoint = {**checkpoint, "backbone": spec.name, "class_names": class_names, "temperature": temperature}
    if not isinstance(checkpoint["model_state_dict"], dict):
        raise InvalidRequest(f"{filename!r}: model_state_dict must be a dict of tensors", code="invalid_checkpoint")
    try:
        Predictor.from_checkpoint(checkpoint, runtime=RuntimeOptions("torch"))
    except CheckpointError as exc:
        raise InvalidRequest(f"{filename!r}: {exc}", code=exc.code) from None
    except (TypeError, ValueError, AttributeError) as exc:  # weights of the wrong kind (not tensors)
        raise InvalidRequest(
            f"{filename!r}: weights do not fit backbone {spec.name!r}: {exc}", code="invalid_checkpoint"
        ) from None
    model_id = uuid.uuid4().hex
    path = services.files.checkpoint_path(model_id)
    save_checkpoint(
        path,
        build_checkpoint(
            model_state_dict=checkpoint["model_state_dict"],
            class_names=class_names,
            backbone=spec.name,
            preprocessing=spec.preprocessing(),
            temperature=temperature,
            metrics=None,
            feature_stages=checkpoint.get("feature_stages") or (),
        ),
    )
    try:
        with services.db.session() as session:
            model = repo.create_model(
                session,
                id=model_id,
                job_id=None,
                name=(name or "").strip() or f"imported {filename}"[:200],
                class_names=class_names,
                backbone=spec.name,
                params={"imported_from": filename, "temperature": temperature},
                data={},
                history=[],
                metrics=None,
            )
            return model_view(model)
    except BaseException:
        remove_tree(path.parent)
        raise
    finally:
        forget_usage(services)


def _check_import_room(services: Services, path: Path) -> None:
    """A file the API streamed into the data dir was checked by its declared size before it came (and
    now counts in the total); a file from elsewhere adds its size."""
    inside = services.files.root in path.resolve().parents
    check_room(services, 0 if inside else path.stat().st_size)
