"""Near-duplicates: groups of photos that are copies of one another, on features and pixel fingerprints."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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


SIMILARITY_BLOCK = 1024  # rows of the similarity matrix held at once (1,024 x 50,000 photos: 200 MB)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """The rows of ``vectors`` scaled to length 1 (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def similarity_blocks(unit: np.ndarray, block: int = SIMILARITY_BLOCK) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, cosine similarities [rows, N])`` of ``unit``'s rows against all of them, ``block``
    rows at a time, with -1 where a row meets itself: the whole ``N x N`` matrix is never held (50,000
    photos would need 10 GB)."""
    for start in range(0, len(unit), block):
        rows = unit[start : start + block] @ unit.T
        rows[np.arange(len(rows)), np.arange(start, start + len(rows))] = -1.0
        yield start, rows


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``vectors``, with -1 on the diagonal (small sets only;
    ``similarity_blocks`` for a dataset's photos)."""
    unit = unit_rows(vectors)
    return np.concatenate([rows for _, rows in similarity_blocks(unit)]) if len(unit) else np.zeros((0, 0))


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
    unit = unit_rows(standardize(features))
    prints = unit_rows(fingerprints) if fingerprints is not None else None
    pairs: dict[tuple[int, int], float] = {}
    for start, rows in similarity_blocks(unit):
        linked = rows >= min_similarity
        if prints is not None:
            linked &= prints[start : start + len(rows)] @ prints.T >= min_fingerprint_similarity
        for i, j in zip(*np.nonzero(linked)):
            a, b = start + int(i), int(j)
            if a < b:
                pairs[(a, b)] = float(rows[i, j])
    groups = _link(len(features), pairs)
    found = [DuplicateGroup(tuple(members), round(_weakest_link(pairs, members), 4)) for members in groups]
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


def _weakest_link(pairs: dict[tuple[int, int], float], members: list[int]) -> float:
    """The lowest similarity among the group's linked pairs."""
    inside = set(members)
    return min(value for (a, b), value in pairs.items() if a in inside and b in inside)


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
