"""Take docs/img/run-page.png: a run's page in the MLflow UI, from this checkout's store.

Run after `make run` (twice, so the page shows a decision against a champion):

    .venv/bin/python docs/shoot_run_page.py

It starts `tlops ui` on a free port, opens the newest run's page in Debian's Chromium (headless,
driven by Playwright, as the browser tests do) and saves the screenshot.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]  # fmt: skip


def main() -> None:
    """Screenshot the newest run's page of this checkout's store into docs/img/run-page.png."""
    import mlflow
    from playwright.sync_api import sync_playwright

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{REPO / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tlops")
    run = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tlops"), "ui", "--port", str(port)],
        cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as playwright:
            chromium = shutil.which("chromium")
            browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}")
            page.wait_for_function(
                "() => Array.from(document.images).some(i => i.src.includes('get-artifact') "
                "&& i.naturalWidth > 0)", timeout=120_000,
            )  # fmt: skip
            page.screenshot(path=str(REPO / "docs" / "img" / "run-page.png"))
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(f"docs/img/run-page.png: run {run.info.run_id} ({run.info.run_name})")


if __name__ == "__main__":
    main()
