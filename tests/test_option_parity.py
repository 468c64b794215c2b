"""Every field of the training request is an option of each client: a flag of ``vision-trainer train``, and a
field of the ``POST /train`` form schema that the web page builds its training options from (the page
itself: tests/web/test_train_options.py)."""

from __future__ import annotations

import argparse
import enum
import json
import re
from pathlib import Path
from typing import Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from tests.conftest import REPO, make_settings
from vision_trainer.api.app import create_app
from vision_trainer.cli import build_parser
from vision_trainer.cli.options import add_model_flags, flag_name, model_values
from vision_trainer.services.training import TrainRequest

TRAIN_FIELDS = sorted(TrainRequest.model_fields)
WEB = REPO / "src" / "vision_trainer" / "web"


def train_parser() -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["train"]


def parse_train(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


@pytest.mark.parametrize("field", TRAIN_FIELDS)
def test_every_training_field_is_a_flag_of_train(field: str) -> None:
    flags = {option: action.dest for action in train_parser()._actions for option in action.option_strings}
    assert flags.get(flag_name(field)) == field


def test_flags_not_given_leave_the_request_defaults() -> None:
    args = parse_train("photos")
    assert model_values(args, TrainRequest) == {}
    assert TrainRequest.model_validate(model_values(args, TrainRequest)) == TrainRequest()


def test_the_flags_of_the_readme_and_the_tests_keep_working() -> None:
    args = parse_train(
        "photos",
        *("--epochs", "3", "--backbone", "efficientnet_lite0", "--test-split", "0.25", "--seed", "7"),
        *("--name", "pets", "--augment-views", "0", "--early-stopping", "--class-weighting", "balanced"),
        "--skip-invalid",
    )
    request = TrainRequest.model_validate(model_values(args, TrainRequest))
    assert request.model_dump(exclude_unset=True) == {
        "epochs": 3,
        "backbone": "efficientnet_lite0",
        "test_split": 0.25,
        "seed": 7,
        "name": "pets",
        "augment_views": 0,
        "early_stopping": True,
        "class_weighting": "balanced",
    }
    assert args.skip_invalid and args.folder == Path("photos")
    assert parse_train("--dataset", "d", "--no-early-stopping").early_stopping is False


def readme_train_flags() -> set[str]:
    """The flags on the README's ``vision-trainer train`` lines and the comment lines continuing them."""
    flags: set[str] = set()
    continuing = False
    for line in (REPO / "README.md").read_text().splitlines():
        continuing = "vision-trainer train" in line or (continuing and line.lstrip().startswith("#"))
        if continuing:
            flags |= set(re.findall(r"--[a-z][a-z-]*", line))
    return flags


def test_every_train_flag_the_readme_names_exists() -> None:
    known = {option for action in train_parser()._actions for option in action.option_strings}
    named = readme_train_flags()
    assert {"--class-weighting", "--no-early-stopping", "--skip-invalid"} <= named <= known


def test_a_literal_is_a_choice() -> None:
    with pytest.raises(SystemExit):
        parse_train("photos", "--class-weighting", "heavy")


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class LaterRequest(BaseModel):
    """Fields of kinds the training request may grow: each becomes a flag with no edit of the CLI."""

    mixup: bool = Field(True, description="Mix pairs of photos, 100% of the time.")
    ratio: float | None = Field(None, gt=0, lt=1, description="A ratio.")
    mode: Mode = Mode.FAST
    level: Literal[1, 2, 3] = 2
    tags: list[str] = Field(default_factory=list)


def test_new_kinds_of_fields_become_flags() -> None:
    parser = argparse.ArgumentParser()
    add_model_flags(parser, LaterRequest)
    given = parser.parse_args(["--no-mixup", "--ratio", "0.5", "--mode", "slow", "--level", "3", "--tags", '["a"]'])
    assert LaterRequest.model_validate(model_values(given, LaterRequest)) == LaterRequest(
        mixup=False, ratio=0.5, mode=Mode.SLOW, level=3, tags=["a"]
    )
    assert LaterRequest.model_validate(model_values(parser.parse_args([]), LaterRequest)) == LaterRequest()
    help_text = parser.format_help()  # a % in a description must not break argparse's formatting
    assert "100% of the time. (default: on)" in " ".join(help_text.split())
    assert "> 0, < 1" in help_text


def test_the_served_train_form_has_every_training_field(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "data", augment_views=0))) as client:
        spec = client.get("/openapi.json").json()
    form = spec["paths"]["/train"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(TRAIN_FIELDS) <= set(form["properties"])


def test_the_page_leaves_out_no_training_field() -> None:
    """The page makes a control for every field of that form but the ones it names as no training option."""
    source = (WEB / "options.js").read_text()
    left_out = json.loads(re.search(r"const NOT_OPTIONS = (\[.*?\]);", source).group(1))
    assert left_out and not set(left_out) & set(TRAIN_FIELDS)
