"""Label Studio tasks out, annotations back as a labeled drop: the offline path (an export file)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tlops.labeling.drop import LABELS_FILE, PullError, read_export, write_drop
from tlops.labeling.studio import (
    StudioError,
    choice_result,
    data_uri,
    label_config,
    tasks_from_selection,
)

CLASSES = ["0", "1", "2"]


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (8, 8), value).save(out, format="PNG")
    return out.getvalue()


def _selection(tmp_path: Path, n: int = 4) -> Path:
    """A to_label.csv as select_labels writes it, over real files: 2 audit, the rest select."""
    folder = tmp_path / "unlabeled"
    folder.mkdir(parents=True)
    listed = tmp_path / "to_label.csv"
    with listed.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["file", "path", "sha256", "role", "score", "reason", "predicted", "probability"]
        )
        for i in range(n):
            content = _png(i * 40)
            (folder / f"u{i}.png").write_bytes(content)
            role = "audit" if i < 2 else "select"
            writer.writerow(
                [folder / f"u{i}.png", f"_unlabeled/u{i}.png", hashlib.sha256(content).hexdigest(),
                 role, "0.5", "why", str(i % 3), "0.61"]
            )  # fmt: skip
    return listed


def _export(tmp_path: Path, answers: list[Any]) -> list[dict[str, Any]]:
    """Label Studio's JSON export of the pushed tasks, each answered as ``answers`` says."""
    tasks = tasks_from_selection(_selection(tmp_path, len(answers)))
    exported = []
    for task_id, (task, answer) in enumerate(zip(tasks, answers, strict=True), start=1):
        annotations = []
        if answer == "skip":
            annotations = [{"id": 100 + task_id, "result": [], "was_cancelled": True}]
        elif answer is not None:
            labels = answer if isinstance(answer, list) else [answer]
            result = [choice_result(label) for label in labels]
            annotations = [{"id": 100 + task_id, "result": result, "completed_by": 1}]
        exported.append({"id": task_id, **task, "annotations": annotations})
    return exported


def test_tasks_carry_the_image_inline_and_the_champion_answer(tmp_path: Path) -> None:
    tasks = tasks_from_selection(_selection(tmp_path))
    assert [t["data"]["role"] for t in tasks] == ["audit", "audit", "select", "select"]
    assert tasks[0]["data"]["image"] == data_uri(_png(0), "u0.png")
    assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")
    (prediction,) = tasks[1]["predictions"]
    assert prediction["score"] == 0.61 and prediction["result"][0]["value"] == {"choices": ["1"]}
    assert label_config(CLASSES).count("<Choice ") == 3


def test_an_image_changed_after_selection_is_not_sent(tmp_path: Path) -> None:
    listed = _selection(tmp_path)
    (tmp_path / "unlabeled" / "u2.png").write_bytes(_png(255))
    with pytest.raises(StudioError, match=r"u2\.png changed since it was selected"):
        tasks_from_selection(listed)


def test_the_audit_is_the_test_split_and_the_rest_train(tmp_path: Path) -> None:
    pulled = read_export(_export(tmp_path, ["2", "0", "1", "skip", None]), CLASSES)
    out = tmp_path / "drop"
    write_drop(pulled, out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["test/0/u1.png", "test/2/u0.png", "train/1/u2.png"]
    assert (out / "test/2/u0.png").read_bytes() == _png(0)
    assert len(pulled.skipped) == 1 and len(pulled.unfinished) == 1
    rows = list(csv.DictReader((out / LABELS_FILE).open()))
    assert (rows[0]["path"], rows[0]["task"], rows[0]["annotation"], rows[0]["predicted"]) == (
        "test/2/u0.png",
        "1",
        "101",
        "0",
    )
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    write_drop(
        read_export(_export(tmp_path / "again", ["2", "0", "1", "skip", None]), CLASSES), out
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}.keys() == before.keys()
    assert all(p.read_bytes() == content for p, content in before.items() if p.suffix == ".png")


@pytest.mark.parametrize(
    ("answers", "rule"),
    [
        (["0", ["1", "2"]], r"task 2 \(.*u1\.png\): 2 choices"),
        (["0", "7"], r"task 2 \(.*u1\.png\): class '7' is not one the model knows"),
    ],
)
def test_bad_annotations_fail_and_write_nothing(
    tmp_path: Path, answers: list[Any], rule: str
) -> None:
    out = tmp_path / "drop"
    out.mkdir()
    (out / "kept.txt").write_text("the drop as it was")
    pulled = read_export(_export(tmp_path, answers), CLASSES)
    with pytest.raises(PullError, match=rule):
        write_drop(pulled, out)
    assert [p.name for p in out.iterdir()] == ["kept.txt"]


def test_an_image_changed_since_it_was_sent_is_refused(tmp_path: Path) -> None:
    exported = _export(tmp_path, ["0", "1"])
    (tmp_path / "unlabeled" / "u1.png").write_bytes(_png(200))  # edited after the push
    pulled = read_export(exported, CLASSES)
    assert pulled.problems == [
        f"task 2 ({tmp_path / 'unlabeled' / 'u1.png'}): {tmp_path / 'unlabeled' / 'u1.png'} "
        "changed since it was sent for labeling; send it again"
    ]
    tampered = _export(tmp_path / "t", ["0"])
    tampered[0]["data"]["image"] = data_uri(_png(9), "u0.png")
    assert "its image changed since it was sent" in read_export(tampered, CLASSES).problems[0]


def test_pull_reads_an_export_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tests.conftest import REPO
    from tlops.cli import app

    export = tmp_path / "export.json"
    export.write_text(json.dumps(_export(tmp_path, ["1", "2", "0"])))
    out = tmp_path / "drop"
    args = ["labels", "pull", str(out), "--export", str(export), "--no-dvc"]
    result = CliRunner().invoke(app, [*args, "--params", str(REPO / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "2 audit images (test split), 1 selected (train split)" in result.output
    assert sorted(p.parent.parent.name for p in out.rglob("*.png")) == ["test", "test", "train"]
    refused = CliRunner().invoke(
        app, ["labels", "pull", str(tmp_path / "other"), "--export", str(export)]
    )
    assert refused.exit_code == 1 and "not inside a DVC repository" in refused.output
    assert not (tmp_path / "other").exists()
