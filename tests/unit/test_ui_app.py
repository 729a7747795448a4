"""The page `tlops ui` serves: MLflow's own, opening a fresh browser in the training view."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tlops.tracking.ui_app import PREFERENCE_KEY, SCRIPT, TrainingViewApp, page_with_default


def test_the_default_is_set_before_mlflows_code_and_a_users_choice_stands() -> None:
    page = page_with_default('<html><head><script defer src="main.js"></script></head></html>')
    assert page.index(SCRIPT) < page.index("main.js")
    assert f"if(localStorage.getItem('{PREFERENCE_KEY}')===null)" in SCRIPT  # only when unset


def test_an_mlflow_page_without_a_head_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"MLflow.s index\.html has no <head>"):
        page_with_default("<html><body></body></html>")


def test_the_page_is_served_with_the_default_and_everything_else_is_mlflows() -> None:
    app = TrainingViewApp()
    passed: list[str] = []

    async def mlflow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        passed.append(scope["path"])

    app._mlflow = mlflow  # MLflow's app, as a stand-in that records what reaches it
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    for path in ("/", "/ajax-api/2.0/mlflow/experiments/search", "/static-files/main.js"):
        asyncio.run(app({"type": "http", "path": path, "method": "GET"}, receive, send))
    assert passed == ["/ajax-api/2.0/mlflow/experiments/search", "/static-files/main.js"]
    assert sent[0]["status"] == 200 and SCRIPT.encode() in sent[1]["body"]
