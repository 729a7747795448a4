"""Finished annotations -> a labeled drop: an ImageFolder with the audit as its test split.

The drop is ``<dir>/test/<class>/<image>`` for the audit sample (uniform: the new data's
test split) and ``<dir>/train/<class>/<image>`` for the selected images (chosen for being
hard or typical: never a test image), with ``.labels.csv`` beside them: every image's task and
annotation id, who labeled it and what the model had predicted. The scan skips hidden files,
and DVC versions it with the images.

Everything is checked before anything is written: a task with several choices, a class the
model does not know, or an image changed since it was sent fails the pull with every such
task named, and the drop stays as it was. Skipped and unfinished tasks are left out and
counted. The drop is written whole from the export, so pulling twice changes nothing.
"""

from __future__ import annotations

import base64
import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlops.io import atomic_dir

LABELS_FILE = ".labels.csv"
SPLIT_OF_ROLE = {"audit": "test", "select": "train"}
COLUMNS = ("path", "sha256", "role", "label", "task", "annotation", "annotator", "predicted")


class PullError(ValueError):
    """The annotations cannot become a labeled drop (each problem is a line)."""


@dataclass
class Pulled:
    """What a pull found: the labeled images and what was left out."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    contents: list[bytes] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # cancelled by the annotator
    unfinished: list[str] = field(default_factory=list)  # no annotation yet
    problems: list[str] = field(default_factory=list)


def _answer(task: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """The latest finished annotation of a task, and whether it was skipped."""
    annotations = sorted(task.get("annotations") or [], key=lambda a: a.get("updated_at") or "")
    done = [a for a in annotations if not a.get("was_cancelled")]
    if done:
        return done[-1], False
    return None, bool(annotations)


def _image(task: dict[str, Any], where: str, root: Path | None) -> bytes | str:
    """The task's image bytes (its inline data URI), or a problem."""
    data = task.get("data") or {}
    uri = str(data.get("image", ""))
    if not uri.startswith("data:") or ";base64," not in uri:
        return f"{where}: its image is not inline (a task tlops did not send)"
    content = base64.b64decode(uri.partition(";base64,")[2])
    if hashlib.sha256(content).hexdigest() != data.get("sha256"):
        return f"{where}: its image changed since it was sent (sha256 differs)"
    source = Path(str(data.get("file", "")))
    if root is not None and not source.is_absolute():
        source = root / source
    if source.is_file() and hashlib.sha256(source.read_bytes()).hexdigest() != data["sha256"]:
        return f"{where}: {source} changed since it was sent for labeling; send it again"
    return content


def read_export(
    tasks: list[dict[str, Any]], classes: list[str], root: Path | None = None
) -> Pulled:
    """Check every task of a Label Studio export; what can become the drop.

    A task's relative ``file`` is checked under ``root`` (default: the working directory).
    """
    pulled = Pulled()
    for task in sorted(tasks, key=lambda t: int(t["id"])):
        data = task.get("data") or {}
        where = f"task {task['id']} ({data.get('file', '?')})"
        answer, skipped = _answer(task)
        if answer is None:
            (pulled.skipped if skipped else pulled.unfinished).append(where)
            continue
        chosen = [
            label
            for result in answer.get("result") or []
            if result.get("type") == "choices"
            for label in result["value"].get("choices", [])
        ]
        if len(chosen) != 1:
            pulled.problems.append(
                f"{where}: {len(chosen)} choices {chosen}; exactly one is a label"
            )
            continue
        if chosen[0] not in classes:
            pulled.problems.append(
                f"{where}: class {chosen[0]!r} is not one the model knows {classes}"
            )
            continue
        content = _image(task, where, root)
        if isinstance(content, str):
            pulled.problems.append(content)
            continue
        role = str(data.get("role", "select"))
        split, name = SPLIT_OF_ROLE.get(role, "train"), Path(str(data["file"])).name
        predicted = (task.get("predictions") or [{}])[0] if task.get("predictions") else {}
        pulled.rows.append(
            {
                "path": f"{split}/{chosen[0]}/{name}",
                "sha256": data["sha256"],
                "role": role,
                "label": chosen[0],
                "task": task["id"],
                "annotation": answer["id"],
                "annotator": answer.get("completed_by", ""),
                "predicted": _predicted(predicted),
            }
        )
        pulled.contents.append(content)
    return pulled


def _predicted(prediction: Any) -> str:
    if not isinstance(prediction, dict):
        return ""
    for result in prediction.get("result") or []:
        return ",".join(result.get("value", {}).get("choices", []))
    return ""


def write_drop(pulled: Pulled, out_dir: Path) -> None:
    """Replace ``out_dir`` with the drop, all at once.

    Raises:
        PullError: Any task had a problem (every one is listed); nothing is written.
    """
    if pulled.problems:
        raise PullError(
            f"{len(pulled.problems)} annotations cannot be used; {out_dir} is unchanged:\n"
            + "\n".join(f"  - {p}" for p in pulled.problems)
        )
    seen: dict[str, str] = {}
    for row in pulled.rows:
        if seen.setdefault(row["path"], row["sha256"]) != row["sha256"]:  # same name, other image
            folder, _, name = row["path"].rpartition("/")
            row["path"] = f"{folder}/{row['sha256'][:12]}_{name}"
    with atomic_dir(out_dir) as staging:
        for row, content in zip(pulled.rows, pulled.contents, strict=True):
            target = staging / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        with (staging / LABELS_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(pulled.rows)
