"""Insights and honest accuracy on the web page: analyze a dataset with planted label mistakes, see the
suspects with their thumbnails, relabel one as suggested and see the insights go stale; the class
balance chart and the suggestions for unlabelled photos; train two models and compare them, with
their accuracies' intervals and the paired test's verdict."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..conftest import Server, photos
from .conftest import LONG, OUTPUT, PHONE, Page
from .test_datasets import percent, train, wait_for_count

pytestmark = pytest.mark.slow

PER_CLASS = 12


def upload(server: Server, dataset_id: str, label: str | None, paths: list[Path]) -> None:
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    answer = server.client.post(f"/datasets/{dataset_id}/images", data={"label": label} if label else {}, files=files)
    assert answer.status_code == 200, answer.text


def planted_dataset(server: Server) -> tuple[str, set[str]]:
    """12 cats and 12 dogs, 2 more cats labelled dog, a flower labelled cat and 3 unlabelled photos.
    Returns the dataset id and the filenames of the cats labelled dog."""
    cats = photos("cats_dogs", "train", "cats", count=PER_CLASS + 2)
    dogs = photos("cats_dogs", "train", "dogs", count=PER_CLASS)
    flower = photos("flowers5", "daisy", count=1)
    unlabelled = photos("cats_dogs", "val", "cats", count=2) + photos("cats_dogs", "val", "dogs", count=1)
    dataset_id = server.client.post("/datasets", json={"name": "Planted"}).json()["dataset_id"]
    upload(server, dataset_id, "cat", cats[:PER_CLASS] + flower)
    upload(server, dataset_id, "dog", dogs + cats[PER_CLASS:])
    upload(server, dataset_id, None, unlabelled)
    return dataset_id, {p.name for p in cats[PER_CLASS:]}


def thumbnails_loaded(page: Page, selector: str) -> None:
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{selector} img')]"
        ".every((img) => img.src.startsWith('blob:') && img.naturalWidth > 0)"
    )


def interval(ci: list[float]) -> str:
    return f"95\u00a0% interval {ci[0] * 100:.0f}–{ci[1] * 100:.0f}\u00a0%"


def analyze(page: Page) -> None:
    """Press Analyze and wait for the results; the progress must have been shown meanwhile."""
    page.evaluate("""() => {
        const box = document.querySelector('[data-testid=insights-progress]');
        new MutationObserver(() => { if (!box.hidden) window.sawProgress = true; })
          .observe(box, { attributes: true, attributeFilter: ['hidden'] });
    }""")
    page.testid("analyze-button").click()
    page.testid("insights-status").filter(has_text=re.compile(r"^Version \d+")).wait_for(timeout=LONG)
    assert page.evaluate("() => window.sawProgress === true"), "the analysis showed no progress"


def test_insights_relabel_and_compare(open_page, server: Server) -> None:
    dataset_id, planted = planted_dataset(server)
    page = open_page()
    page.goto(f"/ui#dataset={dataset_id}")
    page.testid("dataset-title").filter(has_text="Planted").wait_for()
    page.testid("insights-status").filter(has_text="Not analyzed yet").wait_for()

    analyze(page)
    insights = server.client.get(f"/datasets/{dataset_id}/insights").json()
    suspects = page.testid("suspect")
    assert suspects.count() == min(len(insights["suspect_labels"]), 12) > 0
    shown = [suspects.nth(i).get_attribute("data-image-id") for i in range(suspects.count())]
    assert shown == [s["image_id"] for s in insights["suspect_labels"][: len(shown)]]  # most suspect first
    thumbnails_loaded(page, "[data-testid=suspect]")
    assert page.testid("suspect-score").count() == suspects.count()
    assert page.locator("[data-testid=learning-curve] svg").count() == 1 + len(insights["learning_curve"]["per_class"])
    assert page.testid("curve-advice").locator("li").count() == len(insights["learning_curve"]["advice"])
    found = [s for s in insights["suspect_labels"] if s["filename"] in planted]
    assert found, f"no planted cat among the suspects: {insights['suspect_labels']}"
    target = found[0]
    card = page.locator(f"[data-testid=suspect][data-image-id='{target['image_id']}']")
    assert "dog → cat" in card.inner_text() and f"{percent(target['confidence'])} sure it is cat" in card.inner_text()

    counts = insights["class_balance"]["counts"]
    bars = page.testid("balance-bar")
    assert {
        bars.nth(i).get_attribute("data-label"): int(bars.nth(i).get_attribute("data-count"))
        for i in range(bars.count())
    } == counts
    warnings = page.testid("balance-warnings").locator("li")
    assert warnings.count() == len(insights["class_balance"]["warnings"]) > 0  # fewer than recommended
    suggestions = page.testid("suggestion")
    assert suggestions.count() == 3
    sure = [float(re.search(r"([\d.]+)\s%", suggestions.nth(i).inner_text()).group(1)) for i in range(3)]
    assert sure == sorted(sure), "suggestions are not least certain first"
    page.testid("insights").screenshot(path=str(OUTPUT / "desktop-insights.png"))

    # One click relabels the photo as suggested; the panel says so and that the insights are stale.
    card.get_by_test_id("suspect-relabel").click()
    card.get_by_test_id("finding-done").filter(has_text="Relabelled as cat").wait_for()
    page.testid("insights-status").filter(has_text="Stale").wait_for()
    analyzed = insights["dataset_version"]
    assert f"version {analyzed} → {analyzed + 1}" in page.testid("insights-status").inner_text()
    wait_for_count(page, "cat", PER_CLASS + 2)
    image = server.client.get(f"/datasets/{dataset_id}/images", params={"label": "cat"}).json()["items"]
    assert target["image_id"] in {i["image_id"] for i in image}

    # Two models (the second with backbone=auto and balanced class weights), then compare them.
    train(page, models=1)
    page.testid("dataset-backbone-input").select_option("auto")
    page.locator(".dataset-train-form summary").click()
    page.testid("dataset-class-weighting-input").select_option("balanced")
    page.testid("dataset-tune-input").select_option("top")
    train(page, models=2)
    models = server.client.get(f"/datasets/{dataset_id}").json()["models"]
    details = [server.client.get(f"/models/{m['model_id']}").json() for m in models]
    assert details[0]["params"]["class_weighting"] == "balanced" and details[0]["metrics"]["backbone_selection"]
    tuning = details[0]["metrics"]["tuning"]
    assert tuning["kept"] == "top" and details[0]["params"]["tune"] == "top"
    page.testid("result-tuning").filter(has_text=f"Tuned {tuning['cut']} ({tuning['epochs']} epochs)").wait_for()
    for i, detail in enumerate(details):
        ci = page.testid("dataset-model-ci").nth(i)
        ci.filter(has_text=interval(detail["metrics"]["test_accuracy_ci"])).wait_for()
        assert page.testid("dataset-model-rough").nth(i).is_visible()  # fewer than 30 test photos
    page.testid("test-accuracy-ci").filter(has_text=interval(details[0]["metrics"]["test_accuracy_ci"])).wait_for()
    assert "rough" in page.testid("rough-warning").inner_text()
    assert page.testid("backbone-selection").locator("tbody tr").count() == len(
        details[0]["metrics"]["backbone_selection"]
    )
    page.testid("model-accuracy-ci").first.filter(
        has_text=interval(details[0]["metrics"]["test_accuracy_ci"])
    ).wait_for()

    page.testid("dataset-compare-button").click()
    page.testid("compare-verdict").first.wait_for(timeout=LONG)
    result = server.client.post(
        "/models/compare", data={"model_ids": [m["model_id"] for m in models], "dataset_id": dataset_id}
    ).json()
    cards = page.testid("compare-model")
    assert cards.count() == 2
    for i, model in enumerate(result["models"]):
        assert cards.nth(i).get_by_test_id("compare-accuracy").inner_text() == percent(model["accuracy"])
        assert interval(model["accuracy_ci"]) in cards.nth(i).get_by_test_id("compare-accuracy-ci").inner_text()
        assert cards.nth(i).get_by_test_id("compare-confusion").locator("tbody tr").count() == len(
            result["class_names"]
        )
    verdict = page.testid("compare-verdict").inner_text()
    expected = "is better than" if result["pairs"][0]["significant"] else "No real difference between"
    assert expected in verdict and "p = " in verdict
    assert page.testid("compare-f1").locator("tbody tr").count() == len(result["class_names"])
    page.testid("compare-view").screenshot(path=str(OUTPUT / "desktop-compare.png"))

    phone = open_page(PHONE)
    phone.goto(f"/ui#dataset={dataset_id}")
    phone.testid("insights-status").filter(has_text="Stale").wait_for()
    thumbnails_loaded(phone, "[data-testid=insights]")
    phone.testid("insights").screenshot(path=str(OUTPUT / "phone-insights.png"))
    for i in range(2):
        phone.testid("compare-model-checkbox").nth(i).check()
    phone.testid("compare-dataset").select_option(dataset_id)
    phone.testid("compare-button").click()
    phone.testid("compare-verdict").wait_for(timeout=LONG)
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
    phone.testid("compare-view").screenshot(path=str(OUTPUT / "phone-compare.png"))
