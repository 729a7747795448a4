"""`tlops ui` as a process: the page it serves, what it prints, how it stops.

A real MLflow server on loopback over a throwaway store; the browser's side of the page is
tests/e2e. No timing is asserted: a stop is waited for with a generous limit.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, project_env
from tests.helpers import free_port, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_tlops_ui_opens_in_the_training_view_prints_no_upstream_noise_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    from tlops.tracking.ui_app import PREFERENCE_KEY, TRAINING_VIEW

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "tlops"), "ui", "--port", str(port)],
        cwd=tmp_path,
        env=project_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", server)
        with urllib.request.urlopen(f"{base}/", timeout=30) as response:
            page = response.read().decode()
        # the page saves the training view as a fresh browser's choice, before MLflow's code
        assert page.index(PREFERENCE_KEY) < page.index("main.")  # before MLflow's code runs
        assert f"setItem('{PREFERENCE_KEY}','\"{TRAINING_VIEW}\"')" in page
        # everything else is MLflow's own app
        search = f"{base}/ajax-api/2.0/mlflow/experiments/search?max_results=5"
        with urllib.request.urlopen(search, timeout=30) as response:
            assert response.status == 200
    finally:
        # SIGTERM to the process `tlops ui` started as: the server took its place
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=120)
    assert "StarletteDeprecationWarning" not in output, output
    assert "Traceback" not in output, output
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # nothing is left listening
