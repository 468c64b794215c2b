"""Model registry use cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..store import repository as repo
from .context import Services
from .errors import NotFound
from .views import model_summary, model_view


def list_models(services: Services, *, limit: int, offset: int) -> dict[str, Any]:
    with services.db.session() as session:
        models, count = repo.list_models(session, limit=limit, offset=offset)
        return {"items": [model_summary(m) for m in models], "count": count}


def get_model(services: Services, model_id: str) -> dict[str, Any]:
    """Everything we know about one model. Raises NotFound."""
    with services.db.session() as session:
        model = repo.get_model(session, model_id=model_id)
        if model is None:
            raise NotFound(f"no model with id {model_id!r}; GET /models lists them")
        return model_view(model)


def checkpoint_file(services: Services, model_id: str) -> Path:
    """Path of the model's ``trained_model.pth``. Raises NotFound."""
    get_model(services, model_id)
    path = services.files.checkpoint_path(model_id)
    if not path.is_file():
        raise NotFound(f"the checkpoint file of model {model_id} is missing from the data dir")
    return path
