"""The MLflow UI as ``tlops ui`` serves it: MLflow's own server, opening in the training view.

MLflow 3.17's UI picks between its GenAI and its model-training views in the browser alone:
the page's ``workflowType`` query parameter, else the browser's saved choice (localStorage
``mlflow.workflowType_v1``, written when the user flips the sidebar's "GenAI | Model training"
switch), else GenAI. No server option and no experiment tag changes that default, so a newcomer
who opens the UI's Home and clicks the experiment lands in an empty traces overview.

This app is MLflow's own app (``mlflow.server.fastapi_app:app``) with one change: its page,
``index.html``, starts with one line of script that saves the training view as the browser's
choice where the browser has made none (and marks the assistant panel, which MLflow opens over
a third of the page on a loopback UI's first visit, as already shown). A choice the user made
with the switch stands. It is
registered as MLflow's ``mlflow.app`` plugin ``tlops`` (``mlflow server --app-name tlops``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PREFERENCE_KEY = "mlflow.workflowType_v1"
TRAINING_VIEW = "machine_learning"
# MLflow opens its assistant panel over a third of the page on a loopback UI's first load
ASSISTANT_SHOWN_KEY = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
DEFAULTS = {PREFERENCE_KEY: f'"{TRAINING_VIEW}"', ASSISTANT_SHOWN_KEY: "true"}
SCRIPT = (
    "<script>try{"
    + "".join(
        f"if(localStorage.getItem('{key}')===null)localStorage.setItem('{key}','{value}');"
        for key, value in DEFAULTS.items()
    )
    + "}catch(e){}</script>"
)
PAGES = ("/", "/index.html")


def page_with_default(html: str) -> str:
    """MLflow's ``index.html`` with the training view as the default choice, first in <head>."""
    if "<head>" not in html:
        raise ValueError(
            "MLflow's index.html has no <head>: this MLflow is not the one tlops knows"
        )
    return html.replace("<head>", "<head>" + SCRIPT, 1)


class TrainingViewApp:
    """An ASGI app: MLflow's, with :func:`page_with_default` for the UI's page."""

    def __init__(self) -> None:
        self._mlflow: Any = None
        self._page: bytes | None = None

    def _inner(self) -> Any:
        if self._mlflow is None:  # on the first request, in the server process, not on import
            from mlflow.server.fastapi_app import app

            self._mlflow = app
        return self._mlflow

    def _index(self) -> bytes:
        if self._page is None:
            import mlflow.server

            html = (Path(mlflow.server.__file__).parent / "js" / "build" / "index.html").read_text(
                encoding="utf-8"
            )
            self._page = page_with_default(html).encode()
        return self._page

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve the page ourselves; everything else (API, assets, lifespan) is MLflow's."""
        if (
            scope["type"] == "http"
            and scope["path"] in PAGES
            and scope["method"] in ("GET", "HEAD")
        ):
            body = self._index()
            headers = [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-cache"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send(
                {"type": "http.response.body", "body": body if scope["method"] == "GET" else b""}
            )
            return
        await self._inner()(scope, receive, send)


# an instance, not a function: MLflow would take a plain function for an app factory
app = TrainingViewApp()
