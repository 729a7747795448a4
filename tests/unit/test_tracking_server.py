"""The check that a step makes before it logs: a tracking server that is down or refuses the
credentials fails the step at once, with the reason, instead of MLflow's minutes of retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import changed, free_port, repo_params
from tlops.tracking.runs import REACH_ATTEMPTS, TrackingServerError, check_server


class _Answer(BaseHTTPRequestHandler):
    status = 200
    hang = 0  # how many requests get no answer (until the test ends)
    released = threading.Event()

    def do_GET(self) -> None:
        if _Answer.hang > 0:
            _Answer.hang -= 1
            _Answer.released.wait(60)
            return
        ok = self.headers.get("Authorization") == "Basic dTpwdw=="  # u:pw
        code = self.status if ok or self.status != 200 else 401
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Answer.released.clear()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Answer.released.set()
        httpd.shutdown()


def test_a_server_that_is_down_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingServerError, match=f"{uri} is not reachable"):
        check_server(repo_params().tracking)


def test_credentials_are_sent_and_a_refusal_says_which_variables(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(TrackingServerError, match=r"refused no credentials.*USERNAME"):
        check_server(repo_params().tracking)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "u")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(TrackingServerError, match="refused the credentials given"):
        check_server(repo_params().tracking)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    check_server(repo_params().tracking)  # accepted: no error


def test_a_server_error_is_reported_and_a_local_store_is_not_checked(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Answer, "status", 503)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    with pytest.raises(TrackingServerError, match="HTTP 503"):
        check_server(repo_params().tracking)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    nowhere = changed(repo_params().tracking, tracking_uri="sqlite:///nowhere/mlflow.db")
    check_server(nowhere)  # no server


def test_a_server_slow_to_answer_once_gets_a_second_try_and_a_hung_one_fails(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "u")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    monkeypatch.setattr(_Answer, "hang", 1)  # just started, say: the first request hangs
    check_server(repo_params().tracking, timeout=2)  # the second one is answered: no error
    monkeypatch.setattr(_Answer, "hang", REACH_ATTEMPTS)
    with pytest.raises(TrackingServerError, match=r"no answer within 2 s, 2 tries"):
        check_server(repo_params().tracking, timeout=2)
