"""Class balance: labelled photos per class, and warnings when classes are far apart or small."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class BalanceWarning:
    """``code``: ``imbalanced`` (smallest class under half the largest) or ``few_photos`` (under the recommended count)."""

    code: str
    message: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class ClassBalance:
    counts: dict[str, int]
    warnings: tuple[BalanceWarning, ...]


def class_balance(counts: Mapping[str, int], recommended: int = 20) -> ClassBalance:
    """Labelled photos per class, with a warning when the classes are far apart in size or too small.

    Args:
        counts: Labelled photos per class name.
        recommended: Fewest photos per class we recommend.
    """
    warnings: list[BalanceWarning] = []
    if counts:
        largest = max(counts, key=lambda name: counts[name])
        smallest = min(counts, key=lambda name: counts[name])
        if counts[smallest] * 2 < counts[largest]:
            warnings.append(
                BalanceWarning(
                    "imbalanced",
                    f"class {smallest!r} has {counts[smallest]} photos, less than half of {largest!r} "
                    f"({counts[largest]}); add photos to it or train with class_weighting=balanced",
                    (smallest, largest),
                )
            )
        few = tuple(name for name, count in counts.items() if count < recommended)
        if few:
            listed = ", ".join(f"{name!r} ({counts[name]})" for name in few)
            warnings.append(
                BalanceWarning(
                    "few_photos",
                    f"fewer than {recommended} photos in {listed}; accuracy will be rough until you add more",
                    few,
                )
            )
    return ClassBalance(dict(counts), tuple(warnings))
