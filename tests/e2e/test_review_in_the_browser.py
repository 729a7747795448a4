"""A reviewer in a real browser: headless Chromium against `tlops ui` on a real pipeline's store.

The store is the one two `tlops run`s made (the session's `two_runs`): a champion, then a tie
that was kept out. Chromium is Debian's (`make test` installs it when missing), driven by
Playwright without any browser download; every wait is on a condition, with a generous limit,
never a fixed sleep.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, project_env
from tests.helpers import free_port, wait_for_http

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
WAIT_MS = 90_000  # a loaded 2-core machine renders the MLflow UI slowly


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def ui(pipeline_project: Path, two_runs: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """`tlops ui` on the project's store: (base URL, the experiment link it printed)."""
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "tlops"), "ui", "--port", str(port)],
        cwd=pipeline_project,
        env=project_env(pipeline_project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert server.stdout is not None
        printed = "".join(server.stdout.readline() for _ in range(2))
        link = re.search(r"(http://\S+workflowType=machine_learning)", printed)
        assert link, printed
        wait_for_http(f"{base}/health", server)
        yield base, link.group(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _runs(pipeline_project: Path) -> list[Any]:
    import mlflow

    uri = f"sqlite:///{pipeline_project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tlops")
    return list(
        client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    )[:2]


def test_the_printed_link_opens_the_training_view_of_the_experiment(
    page: Any, ui: tuple[str, str], pipeline_project: Path
) -> None:
    _, link = ui
    first, second = _runs(pipeline_project)
    page.goto(link)
    for run in (first, second):  # the runs table of the training view, with the run names
        page.get_by_text(run.info.run_name, exact=True).wait_for(timeout=WAIT_MS)
    body = page.inner_text("body")
    assert "Token Usage" not in body and "Tool calls" not in body  # not the GenAI overview
    assert "target (" in body  # the dataset input, with its data version


def test_a_newcomer_clicking_home_then_the_experiment_lands_in_the_training_view(
    page: Any, ui: tuple[str, str], pipeline_project: Path
) -> None:
    """A fresh browser (no saved view) at the UI's Home, clicking the experiment by its name."""
    base, _ = ui
    first, second = _runs(pipeline_project)
    page.goto(f"{base}/#/")
    page.get_by_role("link", name="tlops", exact=True).first.click()
    for run in (first, second):  # the training view's runs table, not the GenAI overview
        page.get_by_text(run.info.run_name, exact=True).wait_for(timeout=WAIT_MS)
    assert "workflowType=genai" not in page.url
    body = page.inner_text("body")
    assert "Token Usage" not in body and "Tool calls" not in body
    # the runs list cuts names at about 28 characters: what tells these two apart, and a
    # release from an experiment, comes first
    shown = {run.info.run_name[:16] for run in (first, second)}
    assert len(shown) == 2 and all(name.startswith("release #") for name in shown)


def test_the_run_page_shows_the_decision_and_its_plots(
    page: Any, ui: tuple[str, str], pipeline_project: Path
) -> None:
    base, _ = ui
    _, second = _runs(pipeline_project)
    experiment = second.info.experiment_id
    page.goto(f"{base}/#/experiments/{experiment}/runs/{second.info.run_id}")
    page.get_by_text("tlops-digits v2: not promoted").wait_for(timeout=WAIT_MS)
    body = page.inner_text("body")
    assert "gain +0.0000 is less than the required" in body
    # the description's plots are the run's own artifacts, and they load
    page.wait_for_function(
        "() => Array.from(document.images).filter(i => i.src.includes('get-artifact?path="
        "confusion_matrix.png') && i.naturalWidth > 0).length > 0",
        timeout=WAIT_MS,
    )


def test_the_compare_page_shows_both_confusion_matrices_side_by_side(
    page: Any, ui: tuple[str, str], pipeline_project: Path
) -> None:
    base, _ = ui
    first, second = _runs(pipeline_project)
    ids = f'["{first.info.run_id}","{second.info.run_id}"]'
    page.goto(f'{base}/#/compare-runs?runs={ids}&experiments=["{first.info.experiment_id}"]')
    entry = page.get_by_text("confusion_matrix.png", exact=True).first
    entry.wait_for(timeout=WAIT_MS)  # a common top-level artifact of both runs
    entry.dispatch_event("click")  # the assistant panel may cover it; the click is the user's
    page.wait_for_function(
        "() => new Set(Array.from(document.images).filter(i => i.src.startsWith('blob:') "
        "&& i.naturalWidth > 0).map(i => i.src)).size >= 2",
        timeout=WAIT_MS,
    )


def test_data_docs_render_offline_with_their_styles(
    page: Any, pipeline_project: Path, two_runs: tuple[str, str]
) -> None:
    report = next((pipeline_project / "runs" / "first").glob("kfp/*/validate-data/report"))
    asked: list[str] = []

    def offline(route: Any) -> None:  # a machine without internet: only local files load
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    pages = [
        report / "report.html",
        report / "data_docs" / "index.html",
        next((report / "data_docs" / "validations").rglob("*-manifest.html")),
    ]
    for html in pages:
        page.goto(html.as_uri())
        style = page.evaluate(
            "() => { const t = document.querySelector('table');"
            " const s = getComputedStyle(t); const b = getComputedStyle(document.body);"
            " return [s.borderCollapse, b.fontFamily, b.backgroundColor]; }"
        )
        assert style[0] == "collapse", (html, style)
        assert "Times" not in style[1] and style[2] == "rgb(248, 249, 250)", (html, style)
    page.goto(pages[0].as_uri())
    colour = page.evaluate("() => getComputedStyle(document.querySelector('.badge')).color")
    assert colour == "rgb(255, 255, 255)"  # a styled badge, not bare text
    assert page.locator(".badge.ok").count() > 5  # every passed rule, in green
    assert asked == []  # nothing was fetched from the network
