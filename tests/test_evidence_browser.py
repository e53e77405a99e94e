"""The evidence in the sandbox (SPEC 15): `make demo`'s notices get their thread reply and
the run's pictures, shown as images, driven in headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from playwright.sync_api import expect, sync_playwright

from devkit.demo import MODEL
from tests.support import REPO
from tests.test_demo import (
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    RunningDemo,
    act_as,
    page_on,
    running_demo,
    wait_for_stage,
)

pytestmark = pytest.mark.slow

SCREENSHOT = REPO / "docs" / "evidence.png"
PICTURES = ["confusion_matrix.png", f"{MODEL}: accuracy, f1 over the last"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[RunningDemo]:
    with running_demo(tmp_path_factory.mktemp("evidence") / "demo") as running:
        yield running


@pytest.fixture(scope="module")
def page(demo):
    assert Path(CHROMIUM).exists(), "no Chromium: run scripts/ensure-chromium.sh"
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            with page_on(browser, demo.url("sandbox") + "/") as tab:
                yield tab
        finally:
            browser.close()


def entry_of(page, version: str):
    """Return the notice of `version` with its thread (the page's entry for it)."""
    found = page.locator(".entry").filter(
        has=page.get_by_test_id("message").filter(has_text=f"{MODEL} v{version}: ")
    )
    expect(found).to_have_count(1)
    return found


def pictures_shown(entry) -> None:
    """The thread shows the run's confusion matrix and the trend chart, loaded as images."""
    thread = entry.get_by_test_id("thread")
    for title in PICTURES:
        image = thread.get_by_test_id("file").filter(has_text=title).locator("img")
        expect(image).to_have_count(1)
        expect(image).to_be_visible()
        image.evaluate("img => img.decode()")  # raises unless the bytes are a picture
        assert image.evaluate("img => img.naturalWidth") > 100


def test_the_thread_shows_the_evidence_and_its_pictures(demo, page, tmp_path):
    act_as(page, "UADA")
    first = entry_of(page, "1")
    expect(first.get_by_test_id("thread")).to_contain_text(f"Evidence for {MODEL} v1")
    expect(first.get_by_test_id("thread")).to_contain_text("no Production to compare with")
    pictures_shown(first)

    first.get_by_test_id("message").get_by_test_id("button-approve_version").click()
    wait_for_stage(MlflowClient(demo.url("mlflow")), "1", "Production")
    page.get_by_test_id("train-button").click()
    second = entry_of(page, "2")
    thread = second.get_by_test_id("thread")
    expect(thread).to_contain_text(f"Evidence for {MODEL} v2 against Production v1")
    # The demo's model has no signature (its /predict takes plain rows): said in one line.
    expect(thread).to_contain_text("Not logged: no signature logged.")
    expect(thread).to_contain_text("Dependencies: unchanged")
    pictures_shown(second)
    # docs/evidence.md's picture; `UPDATE_SCREENSHOT=1` rewrites it, others use tmp.
    shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "evidence.png"
    thread.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000  # a real rendering, pictures included
