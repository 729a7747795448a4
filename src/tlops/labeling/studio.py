"""Label Studio over its REST API: a project per labeling round, tasks in, annotations out.

tlops speaks to any Label Studio (1.23) by URL and API token: the one ``tlops labels studio``
starts on loopback, or a team's own. A project is an image classification config over the
model's classes. Each task carries its image inline (a ``data:`` URI, so no storage has to be
configured and the image cannot change under the annotator), the file it came from, its
sha256 and its role (``audit`` or ``select``), and the champion's answer as a pre-annotation
(a prediction with its probability as score, so annotators can sort by confidence).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

FROM_NAME, TO_NAME = "label", "image"  # the names of the choices and image tags in the config


class StudioError(RuntimeError):
    """Label Studio refused a request, or does not answer."""


def label_config(classes: list[str]) -> str:
    """The labeling config: the image, and one single choice among ``classes``."""
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return (
        f'<View><Image name="{TO_NAME}" value="$image" zoom="true"/>'
        f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">'
        f"{choices}</Choices></View>"
    )


def data_uri(content: bytes, name: str) -> str:
    """An image's bytes as a ``data:`` URI (its type from the file name)."""
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(content).decode('ascii')}"


def tasks_from_selection(
    selection: Path, model_version: str = "champion", root: Path | None = None
) -> list[dict[str, Any]]:
    """Label Studio tasks from ``select_labels``' ``to_label.csv``, audit images first.

    A relative ``file`` (``data.target_unlabeled`` as params.yaml names it) is read under
    ``root`` (default: the working directory, the project's root) and sent as it is written.

    Raises:
        StudioError: A listed image is missing, or changed since it was selected (its sha256
            differs from the one in the list): the message names the file.
    """
    tasks = []
    with selection.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            file = Path(row["file"])
            where = file if root is None or file.is_absolute() else root / file
            if not where.is_file():
                raise StudioError(f"{selection}: {where} is listed but does not exist")
            content = where.read_bytes()
            if hashlib.sha256(content).hexdigest() != row["sha256"]:
                raise StudioError(
                    f"{selection}: {file} changed since it was selected (sha256 differs); "
                    "run select_labels again"
                )
            task: dict[str, Any] = {
                "data": {
                    TO_NAME: data_uri(content, file.name),
                    "file": str(file),
                    "sha256": row["sha256"],
                    "role": row["role"],
                    "reason": row["reason"],
                }
            }
            if row.get("predicted"):
                task["predictions"] = [
                    {
                        "model_version": model_version,
                        "score": float(row["probability"] or 0.0),
                        "result": [choice_result(row["predicted"])],
                    }
                ]
            tasks.append(task)
    return tasks


def choice_result(label: str) -> dict[str, Any]:
    """One classification answer, as Label Studio stores it."""
    return {
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "choices",
        "value": {"choices": [label]},
    }


@dataclass(frozen=True)
class Studio:
    """A Label Studio server.

    Args:
        url: Its address, e.g. ``http://127.0.0.1:8080``.
        token: An API token of a user (``Authorization: Token ...``).
        timeout_s: Per request.
    """

    url: str
    token: str
    timeout_s: float = 60.0

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """One API request; its JSON answer.

        Raises:
            StudioError: The server does not answer, or answers with an error (its detail).
        """
        import requests

        where = f"{self.url.rstrip('/')}{path}"
        try:
            answer = requests.request(
                method,
                where,
                json=body,
                params=query or None,
                headers={"Authorization": f"Token {self.token}"},
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            raise StudioError(
                f"Label Studio at {self.url} does not answer ({type(exc).__name__}); start one "
                "with `tlops labels studio`, or give the URL and token of yours"
            ) from None
        if answer.status_code >= 400:
            detail = answer.text[:300]
            raise StudioError(f"Label Studio {method} {path}: HTTP {answer.status_code}: {detail}")
        return answer.json() if answer.content else None

    def project(self, title: str, classes: list[str]) -> int:
        """The id of the project titled ``title``, made for ``classes`` if there is none.

        Raises:
            StudioError: A project of that title exists with other classes.
        """
        found = self.find(title)
        if found is not None:
            config = self.call("GET", f"/api/projects/{found}")["label_config"]
            if config != label_config(classes):
                raise StudioError(
                    f"Label Studio project {title!r} (id {found}) labels other classes than "
                    f"{classes}; name another project"
                )
            return found
        body = {"title": title, "label_config": label_config(classes)}
        return int(self.call("POST", "/api/projects", body)["id"])

    def find(self, title: str) -> int | None:
        """The id of the project titled ``title``, or None."""
        page = self.call("GET", "/api/projects", title=title, page_size=1000)
        results = page["results"] if isinstance(page, dict) else page
        ids = [int(p["id"]) for p in results if p["title"] == title]
        return ids[0] if ids else None

    def push(self, project: int, tasks: list[dict[str, Any]]) -> int:
        """Import ``tasks`` that the project does not hold yet (by sha256); the count sent."""
        held = {task["data"].get("sha256") for task in self.export(project)}
        new = [task for task in tasks if task["data"]["sha256"] not in held]
        if new:
            self.call("POST", f"/api/projects/{project}/import", new)
        return len(new)

    def export(self, project: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations (Label Studio's JSON export)."""
        tasks = self.call(
            "GET", f"/api/projects/{project}/export", exportType="JSON", download_all_tasks="true"
        )
        return list(tasks or [])

    def annotate(self, task: int, label: str | None) -> int:
        """Answer a task as a person would (None: skip it); the annotation's id."""
        body: dict[str, Any] = {
            "result": [] if label is None else [choice_result(label)],
            "was_cancelled": label is None,
        }
        return int(self.call("POST", f"/api/tasks/{task}/annotations", body)["id"])
