"""Near-duplicates: groups of photos that are copies of one another, on features and pixel fingerprints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from ..linear_probe import standardize

# Measured on resized (90 %) JPEG (q72) copies (bench/insights_quality.py): copies of ordinary photos
# keep 0.92-0.99, of 128-pixel flowers 0.85-0.97; different photos stay under 0.79 on cats_dogs but
# reach 0.89 among blurry flowers on Lite0. Features alone therefore need 0.90; pixel fingerprints
# reject the look-alikes, and with them 0.80 finds every copy.
FEATURES_ONLY_MIN_SIMILARITY = 0.9
CONFIRMED_MIN_SIMILARITY = 0.8


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are copies of one another; ``similarity`` is the weakest link that joined the group."""

    members: tuple[int, ...]
    similarity: float


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``vectors``, with -1 on the diagonal."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -1.0)
    return similarity


def near_duplicate_groups(
    features: np.ndarray,
    *,
    min_similarity: float | None = None,
    fingerprints: np.ndarray | None = None,
    min_fingerprint_similarity: float = 0.75,
) -> list[DuplicateGroup]:
    """Groups of photos whose z-scored features are nearly identical, most similar first.

    Raw cosine does not separate copies from look-alikes on every backbone; per-dimension z-scores over
    the dataset do (measured in bench/insights_quality.py). Some backbones still map distinct blurry
    textures to near-identical features; ``fingerprints`` (``image_fingerprint`` of each photo) then
    confirm each pair on the pixels.

    Args:
        features: ``[N, F]`` plain-view features of every photo, labelled or not, of one backbone.
        min_similarity: Lowest cosine of z-scored features that makes two photos copies; default
            ``FEATURES_ONLY_MIN_SIMILARITY`` (0.90), or ``CONFIRMED_MIN_SIMILARITY`` (0.80) with fingerprints.
        fingerprints: Optional ``[N, D]`` pixel fingerprints; a pair must also reach ``min_fingerprint_similarity``.
        min_fingerprint_similarity: Lowest fingerprint cosine of a pair.

    Returns:
        Groups (single linkage over qualifying pairs) with members in ascending order.
    """
    if len(features) < 2:
        return []
    if min_similarity is None:
        min_similarity = FEATURES_ONLY_MIN_SIMILARITY if fingerprints is None else CONFIRMED_MIN_SIMILARITY
    similarity = cosine_matrix(standardize(features))
    linked = similarity >= min_similarity
    if fingerprints is not None:
        linked &= cosine_matrix(np.asarray(fingerprints, dtype=np.float32)) >= min_fingerprint_similarity
    first, second = np.nonzero(np.triu(linked, k=1))
    groups = _link(len(features), zip(first.tolist(), second.tolist()))
    found = [
        DuplicateGroup(tuple(members), round(float(_weakest_link(similarity, linked, members)), 4))
        for members in groups
    ]
    return sorted(found, key=lambda g: (-g.similarity, g.members))


def _link(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [members for members in groups.values() if len(members) > 1]


def _weakest_link(similarity: np.ndarray, linked: np.ndarray, members: list[int]) -> float:
    block = np.ix_(members, members)
    return float(np.where(linked[block], similarity[block], np.inf).min())


def image_fingerprint(image: Image.Image, size: int = 16) -> np.ndarray:
    """A pixel fingerprint for ``near_duplicate_groups``: the zero-mean, unit-norm ``size``x``size`` grey thumbnail.

    A resized, re-compressed copy keeps a cosine of about 0.99 to its original; different photos
    that a backbone finds alike (blurry grass, two sunsets) stay far below 0.75.
    """
    thumbnail = np.asarray(image.convert("L").resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    centred = (thumbnail - thumbnail.mean()).ravel()
    norm = float(np.linalg.norm(centred))
    return centred / norm if norm > 0 else centred


DuplicateKind = Literal["same_class", "cross_class", "cross_split"]


def duplicate_kind(labels: Sequence[int | None], in_test: Sequence[bool]) -> DuplicateKind:
    """What a group means: ``cross_class`` when its labelled members disagree (one label is wrong),
    else ``cross_split`` when it spans train and test (it would leak), else ``same_class``."""
    if len({label for label in labels if label is not None and label >= 0}) > 1:
        return "cross_class"
    return "cross_split" if len(set(in_test)) > 1 else "same_class"
