"""Which backbone a job gets: the named one, or the default with its offline fallback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ml.backbones import BackboneSpec, fetch_failure, list_backbones, resolve_backbone, weights_available
from ..ml.errors import UnknownBackboneError
from ..settings import Settings
from .errors import InvalidRequest

FALLBACK_BACKBONE = "efficientnet_lite0"
AUTO = "auto"
# backbone=auto compares these, cheapest first (ties go to the faster); those without weights are left out.
AUTO_CANDIDATES = ("efficientnet_lite0", "resnet18", "efficientnet_lite1", "efficientnet_lite2")


@dataclass(frozen=True)
class BackboneChoice:
    spec: BackboneSpec
    requested: str | None
    note: str


def choose_backbone(settings: Settings, requested: str | None) -> BackboneChoice:
    """Resolve the backbone of a training request.

    A backbone named in the request is used as named or refused; with none named the default
    (``VT_DEFAULT_BACKBONE``) is used when its weights load, else efficientnet_lite0, and the note
    says so.

    Raises:
        InvalidRequest: unknown name (``unknown_backbone``) or weights missing (``weights_unavailable``).
    """
    allow = settings.download_weights
    if requested == AUTO:
        names = auto_candidates(settings)
        return BackboneChoice(
            resolve_backbone(names[0]),
            AUTO,
            f"Backbone: auto, chosen among {', '.join(names)} by cross-validated accuracy on the training photos",
        )
    if requested:
        try:
            spec = resolve_backbone(requested)
        except UnknownBackboneError as exc:
            raise InvalidRequest(str(exc), code=exc.code) from None
        if not weights_available(spec, allow_download=allow):
            raise InvalidRequest(
                f"pretrained weights for {spec.name!r} are not available: {missing_weights(spec)}",
                code="weights_unavailable",
            )
        return BackboneChoice(spec, requested, f"Backbone: {spec.name} (ImageNet weights, as requested)")
    default = resolve_backbone(settings.default_backbone)
    if weights_available(default, allow_download=allow):
        return BackboneChoice(default, None, f"Backbone: {default.name} (ImageNet weights, the default)")
    fallback = resolve_backbone(FALLBACK_BACKBONE)
    return BackboneChoice(
        fallback,
        None,
        f"Backbone: {fallback.name} (ImageNet weights), because {default.name}'s pretrained weights "
        f"are not available ({missing_weights(default)})",
    )


def missing_weights(spec: BackboneSpec) -> str:
    """How to provide ``spec``'s weights, after why their download failed when it did."""
    failure = fetch_failure(spec.weights_url)
    return f"{failure}; {spec.weights_help}" if failure else spec.weights_help


def auto_candidates(settings: Settings) -> list[str]:
    """The backbones ``auto`` compares: the registered ones whose weights are here, cheapest first."""
    names = [n for n in AUTO_CANDIDATES if n in list_backbones()]
    return [n for n in names if weights_available(resolve_backbone(n), allow_download=settings.download_weights)]


def backbone_overview(settings: Settings) -> dict[str, Any]:
    """What ``GET /`` reports: the backbone a request without one gets, and every registered one."""
    choice = choose_backbone(settings, None)
    return {
        "default_backbone": choice.spec.name,
        "default_backbone_note": choice.note,
        "backbones": [
            {
                "name": name,
                "pretrained_available": weights_available(
                    resolve_backbone(name), allow_download=settings.download_weights
                ),
                "input_size": resolve_backbone(name).input_size,
            }
            for name in list_backbones()
        ],
    }
