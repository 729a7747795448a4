"""A Label Studio server on loopback, from its own venv (``make label-studio``).

Label Studio pins Django and friends at versions the project's lock does not hold, so it lives
in ``.venv-labelstudio`` (installed from ``infra/label-studio.lock``) and runs as a separate
process. Its data (SQLite database, media) goes to a folder the caller names; its first start
there sets the database up (a minute or two on a small machine). The version check against
PyPI is off, and the user's API token is the one given (Label Studio's legacy token switch),
so a script can use the server as soon as it answers ``/health``.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudioServer:
    """How to start one: its venv, data folder, port and first user."""

    venv: Path
    data_dir: Path
    port: int
    username: str = "tlops@localhost"
    password: str = "tlops-labels"
    token: str = "tlops-local-token"

    @property
    def url(self) -> str:
        """Where it answers."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The ``label-studio start`` command line."""
        executable = self.venv / "bin" / "label-studio"
        if not executable.is_file():
            raise FileNotFoundError(
                f"{executable}: Label Studio is not installed; run `make label-studio`"
            )
        return [
            str(executable),
            *("start", "--no-browser", "--internal-host", "127.0.0.1"),
            *("--port", str(self.port), "--data-dir", str(self.data_dir)),
            *("--username", self.username, "--password", self.password),
            *("--user-token", self.token, "--enable-legacy-api-token"),
        ]

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        """Start it (output to ``log``); it answers once :meth:`wait` returns."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LATEST_VERSION_CHECK": "false",  # no call to PyPI at start
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "DJANGO_DB": "sqlite",
        }
        with log.open("ab") as out:
            return subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env)

    @staticmethod
    def stop(process: subprocess.Popen[bytes]) -> None:
        """Stop it (terminate, then kill after 30 s)."""
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def wait(self, process: subprocess.Popen[bytes], log: Path, seconds: float = 600) -> None:
        """Until ``/health`` answers.

        Raises:
            RuntimeError: It exited or did not answer in time (with its log's tail).
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5):
                    return
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
                    state = "exited" if process.poll() is not None else "did not answer"
                    raise RuntimeError(f"Label Studio {state} ({self.url}); log:\n{tail}") from None
                time.sleep(1)
