"""Both training forms of the page offer every field of the training request, and send what is chosen."""

from __future__ import annotations

import pytest

from vision_trainer.services.training import TrainRequest

from ..conftest import photos
from .conftest import OUTPUT, Page

pytestmark = pytest.mark.slow


def control_names(page: Page, form: str) -> set[str]:
    page.locator(f"{form} details[data-ready]").wait_for(state="attached")  # the server's options are placed
    return set(page.evaluate("(form) => [...document.querySelector(form).elements].map((e) => e.name)", form))


def test_both_training_forms_offer_every_training_option(open_page) -> None:
    page = open_page()
    names = control_names(page, "#train-form")
    assert set(TrainRequest.model_fields) <= names
    assert not {"wait", "skip_invalid", "archive"} & names  # no field of HTTP's own

    page.testid("new-dataset-name").fill("Pets")
    page.testid("create-dataset").click()
    page.testid("dataset-title").filter(has_text="Pets").wait_for()
    assert set(TrainRequest.model_fields) <= control_names(page, ".dataset-train-form")


def test_an_option_the_template_lacks_is_sent(open_page) -> None:
    page = open_page()
    for i, kind in enumerate(("cats", "dogs")):
        page.testid("class-files-input").nth(i).set_input_files(
            [str(p) for p in photos("cats_dogs", "train", kind, count=2)]
        )
    page.get_by_text("Advanced options").click()
    page.testid("early-stopping-input").select_option("true")  # made from the form schema, not the template
    page.locator("#train-form").screenshot(path=str(OUTPUT / "desktop-train-options.png"))
    sent: list[bytes] = []

    def refuse(route: object) -> None:
        sent.append(route.request.post_data_buffer)
        route.fulfill(status=503, json={"detail": "not now", "code": "queue_unavailable"})

    page.route("**/train", refuse)
    page.testid("train-button").click()
    page.get_by_text("not now (queue_unavailable)").wait_for()
    assert b'name="early_stopping"\r\n\r\ntrue\r\n' in sent[0]
    assert b'name="class_weighting"' not in sent[0]  # the template's "none" leaves the server's default
