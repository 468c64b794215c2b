from __future__ import annotations

from pathlib import Path

import pytest

from vision_trainer.ml.data import LabelledImage, drop_duplicates, stratified_split
from vision_trainer.ml.errors import InvalidDatasetError


def items(counts: list[int]) -> list[LabelledImage]:
    return [
        LabelledImage(Path(f"{label}/{i}.img"), label, f"{label}-{i}")
        for label, n in enumerate(counts)
        for i in range(n)
    ]


def test_split_is_stratified_and_keeps_every_class_on_both_sides() -> None:
    split = stratified_split(items([50, 10, 2, 3]), test_fraction=0.2, seed=0)
    test_counts = [sum(i.label == c for i in split.test) for c in range(4)]
    train_counts = [sum(i.label == c for i in split.train) for c in range(4)]
    assert test_counts == [10, 2, 1, 1]
    assert train_counts == [40, 8, 1, 2]
    assert not {i.path for i in split.train} & {i.path for i in split.test}


def test_split_is_reproducible_and_order_independent() -> None:
    data = items([30, 30])
    first = stratified_split(data, test_fraction=0.2, seed=7)
    again = stratified_split(list(reversed(data)), test_fraction=0.2, seed=7)
    other = stratified_split(data, test_fraction=0.2, seed=8)
    assert [i.path for i in first.test] == [i.path for i in again.test]
    assert {i.path for i in first.test} != {i.path for i in other.test}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_rejects_degenerate_fractions(fraction: float) -> None:
    with pytest.raises(InvalidDatasetError):
        stratified_split(items([5, 5]), test_fraction=fraction, seed=0)


def test_exact_duplicates_are_dropped_and_counted() -> None:
    a, b = items([2])
    dup = LabelledImage(Path("1/x.img"), 1, a.sha256)
    unique, removed = drop_duplicates([a, b, dup])
    assert unique == [a, b] and removed == 1
