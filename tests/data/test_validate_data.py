"""The Great Expectations suite on small fixtures: each bad input fails with file and rule named.

Every test runs the real steps: ``ingest_data`` writes the manifest, ``validate_data`` runs the
GX suite over it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ingest, png_with_size, save_image, symlink, truncate, validate
from tlops.config import Params
from tlops.data.manifest import DataDirError
from tlops.steps.validate_data import DataValidationError

Tree = Callable[..., Path]


def check(params: Params, root: Path, tmp_path: Path) -> SimpleNamespace:
    """Ingest and validate ``root``; what ``validate_data`` wrote in validation.json."""
    ingest(params, root, tmp_path / "out" / "ingest")
    return validate(params, tmp_path / "out" / "ingest", tmp_path / "out" / "validate")


def fails(params: Params, root: Path, tmp_path: Path, rule: str, *names: str) -> str:
    with pytest.raises(DataValidationError) as info:
        check(params, root, tmp_path)
    message = str(info.value)
    assert f"FAILED: {rule}" in message, message
    for name in names:
        assert name in message, f"{name!r} not in:\n{message}"
    report = json.loads((tmp_path / "out" / "validate" / "validation.json").read_text())
    assert report["passed"] is False
    assert any(f["rule"] == rule for f in report["failures"])
    return message


def test_clean_data_passes_with_all_outputs(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    root = make_tree()
    result = check(params, root, tmp_path)
    assert result.passed and result.classes == ["cat", "dog", "fox"]
    out = tmp_path / "out" / "validate"
    gx = json.loads((out / "gx_results.json").read_text())
    assert all(r["success"] for r in gx) and len(gx) == 6
    assert (out / "data_docs" / "index.html").is_file()
    html = "".join(p.read_text() for p in (out / "data_docs").rglob("*.html"))
    assert "expect_column_values_to_be_in_set" in html or "values must belong" in html
    summary = (out / "summary.md").read_text()
    assert "passed" in summary and "| cat |" in summary


@pytest.mark.parametrize(
    "make_bad,status",
    [
        (lambda p: p.write_bytes(b""), "empty_file"),
        (lambda p: truncate(save_image(p, 500, 64, "RGB")), "truncated"),
        (lambda p: p.write_text("plain text, not a picture"), "not_an_image"),
        (lambda p: png_with_size(p, 40000, 40000), "decompression_bomb"),
    ],
    ids=["zero-byte", "truncated-png", "text-as-png", "decompression-bomb"],
)
def test_undecodable_files(
    params: Params, make_tree: Tree, tmp_path: Path, make_bad: Callable[[Path], object], status: str
) -> None:
    root = make_tree()
    make_bad(root / "dog" / "bad.png")
    message = fails(params, root, tmp_path, "every file decodes", f"{root}/dog/bad.png", status)
    assert "report:" in message


def test_truncated_jpeg(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree()
    truncate(save_image(root / "fox" / "photo.jpg", 600, 64, "RGB", fmt="JPEG"), 0.5)
    fails(params, root, tmp_path, "every file decodes", f"{root}/fox/photo.jpg", "truncated")


def test_odd_modes_are_converted_and_pass(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree()
    Image.new("CMYK", (16, 16), (10, 200, 30, 0)).save(root / "cat" / "cmyk.jpg")
    ramp = np.arange(256, dtype=np.uint16).reshape(16, 16) * 250
    Image.fromarray(ramp).save(root / "cat" / "deep.png")
    Image.new("RGBA", (16, 16), (1, 2, 3, 40)).save(root / "dog" / "alpha.png")
    Image.new("P", (16, 16), 3).save(root / "fox" / "palette.png")
    assert check(params, root, tmp_path).passed
    manifest = (tmp_path / "out" / "ingest" / "manifest.csv").read_text()
    for mode in ("CMYK", "I;16", "RGBA", ",P,"):
        assert mode in manifest


def test_mode_outside_params_fails(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree()
    Image.new("CMYK", (16, 16)).save(root / "cat" / "cmyk.jpg")
    strict = params.model_copy(
        update={"validate_data": params.validate_data.model_copy(update={"modes": ("L", "RGB")})}
    )
    fails(strict, root, tmp_path, "image mode in ['L', 'RGB']", f"{root}/cat/cmyk.jpg")


def test_empty_class_folder(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree()
    for path in (root / "fox").iterdir():
        path.unlink()
    message = fails(params, root, tmp_path, "at least 5 images per class", f"{root}/fox/")
    assert "(missing)" not in message


def test_class_missing_from_new_data(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree(classes=("cat", "dog"))
    fails(params, root, tmp_path, "at least 5 images per class", "fox/ (missing)")


def test_unexpected_class(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree(classes=("cat", "dog", "fox", "owl"))
    fails(params, root, tmp_path, "labels are in the expected class set", f"{root}/owl/img_000.png")


def with_champion(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, classes: str
) -> Params:
    """``params`` with a registry (a real MLflow SQLite store) whose champion, v1, has ``classes``
    (its class map, comma-separated, as register_model tags it)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = params.register_model.model_name
    client.create_registered_model(name)
    version = client.create_model_version(name, str(tmp_path), tags={"classes": classes})
    client.set_registered_model_alias(name, "champion", version.version)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the params' store, not the test's default
    tracking = params.tracking.model_copy(update={"tracking_uri": uri})
    return params.model_copy(update={"tracking": tracking})


def given_classes(params: Params, *classes: str) -> Params:
    """``params`` with ``validate_data.classes`` set, as ``-S 'validate_data.classes=[...]'``."""
    from tlops.config import apply_overrides

    return apply_overrides(params, {"validate_data.classes": list(classes)})


def test_classes_from_the_champion_in_the_registry(
    params: Params, make_tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(classes=("cat", "dog", "fox", "owl"))
    with_registry = with_champion(params, tmp_path, monkeypatch, "cat,dog,fox,owl")
    name = params.register_model.model_name
    result = check(with_registry, root, tmp_path)
    assert result.classes[-1] == "owl"  # params say cat, dog, fox: the champion wins
    report = json.loads((tmp_path / "out" / "validate" / "validation.json").read_text())
    assert report["class_source"] == f"the class map of champion {name} v1 (MLflow registry)"


def test_stray_files_at_the_root_pass_with_a_note(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    root = make_tree()
    (root / "README.md").write_text("# my data")
    (root / "Thumbs.db").write_bytes(b"\x00" * 10)
    assert check(params, root, tmp_path).passed
    summary = (tmp_path / "out" / "validate" / "summary.md").read_text()
    assert f"skipped {root}/README.md: not inside a class folder" in summary


def test_symlink_outside_root(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree()
    outside = save_image(tmp_path / "private" / "x.png", 900)
    symlink(outside, root / "cat" / "escape.png")
    fails(
        params,
        root,
        tmp_path,
        "every file decodes",
        f"{root}/cat/escape.png",
        "symlink_outside_root",
    )
    snapshot = tmp_path / "out" / "ingest" / "images" / "cat"
    assert not (snapshot / "escape.png").exists()


def test_non_ascii_file_and_class_names(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    classes = ("chat", "café", "猫")
    root = make_tree(classes=classes)
    save_image(root / "café" / "ñandú 🐦.png", 4242)
    p = params.model_copy(
        update={"validate_data": params.validate_data.model_copy(update={"classes": classes})}
    )
    assert check(p, root, tmp_path).passed
    assert (tmp_path / "out" / "ingest" / "images" / "café" / "ñandú 🐦.png").is_file()
    root_bad = make_tree(name="bad", classes=classes)
    (root_bad / "猫" / "壊れた.png").write_bytes(b"")
    fails(p, root_bad, tmp_path, "every file decodes", f"{root_bad}/猫/壊れた.png")


def test_same_image_in_train_and_test(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree(per_class=4, splits=("train", "val", "test"))
    (root / "test" / "dog" / "leak.png").write_bytes(
        (root / "train" / "dog" / "img_001.png").read_bytes()
    )
    message = fails(params, root, tmp_path, "no image shared between splits (leakage)")
    assert f"{root}/test/dog/leak.png = {root}/train/dog/img_001.png" in message


def test_duplicates_inside_a_split_are_a_warning(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    root = make_tree()
    (root / "cat" / "again.png").write_bytes((root / "cat" / "img_003.png").read_bytes())
    result = check(params, root, tmp_path)
    assert result.passed
    assert [w["rule"] for w in result.warnings] == ["no duplicate files"]
    strict = params.model_copy(
        update={
            "validate_data": params.validate_data.model_copy(update={"fail_on_duplicates": True})
        }
    )
    fails(strict, root, tmp_path, "no duplicate files", f"{root}/cat/again.png")


def test_every_file_is_accounted_for_nested_and_multi_frame_images_too(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    root = make_tree()
    nested = save_image(root / "cat" / "deeper" / "still" / "x.png", 999)
    frames = [Image.fromarray(np.full((16, 16), v, dtype=np.uint8)) for v in (10, 120, 240)]
    frames[0].save(root / "dog" / "anim.gif", save_all=True, append_images=frames[1:])
    (root / "dog" / "notes.txt").write_text("not an image")
    result = check(params, root, tmp_path)
    manifest = (tmp_path / "out" / "ingest" / "manifest.csv").read_text()
    assert "cat/deeper/still/x.png" in manifest  # an image below its class folder is used
    info = json.loads((tmp_path / "out" / "ingest" / "ingest.json").read_text())
    assert [s["path"] for s in info["skipped"]] == ["dog/notes.txt"]  # with its reason
    # a multi-frame file: a warning naming it (its first frame is used), or a failure
    assert result.passed
    (warning,) = [w for w in result.warnings if "multi-frame" in w["rule"]]
    assert warning["offending"] == ["dog/anim.gif"]
    strict = params.model_copy(
        update={"validate_data": params.validate_data.model_copy(update={"multi_frame": "fail"})}
    )
    fails(strict, root, tmp_path, warning["rule"], "dog/anim.gif")
    assert nested.is_file()


def test_class_imbalance(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree(classes=("cat", "dog"), per_class=6)
    make_tree(classes=("fox",), per_class=30)
    fails(params, root, tmp_path, "class imbalance ratio at most 3", "largest 30 / smallest 6")


def test_too_few_images_per_split(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree(per_class=6, splits=("train", "val"))
    strict = params.model_copy(
        update={
            "validate_data": params.validate_data.model_copy(
                update={"min_images_per_split_class": 1}
            )
        }
    )
    fails(strict, root, tmp_path, "at least 1 images per class in each split", "test/cat/")


def test_image_size_bounds(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree()
    save_image(root / "dog" / "tiny.png", 31337, size=4)
    fails(params, root, tmp_path, "width within 8..4096", f"{root}/dog/tiny.png", "4x4")


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_missing_or_empty_data_dir_writes_nothing(
    params: Params, tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "data"
    if kind == "empty":
        root.mkdir()
    out = tmp_path / "out" / "ingest"
    with pytest.raises(DataDirError) as info:
        ingest(params, root, out)
    assert str(root) in str(info.value)
    assert not out.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no staging leftovers either


def test_failed_ingest_keeps_the_previous_output(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    root = make_tree()
    out = tmp_path / "out" / "ingest"
    ingest(params, root, out)
    before = (out / "manifest.csv").read_text()
    save_image(root / "train" / "cat" / "x.png", 1)  # now a mixed layout
    with pytest.raises(DataDirError):
        ingest(params, root, out)
    assert (out / "manifest.csv").read_text() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ingest"]


def test_manifest_columns_are_checked(params: Params, make_tree: Tree, tmp_path: Path) -> None:
    root = make_tree()
    ingest(params, root, tmp_path / "ingest")
    manifest = tmp_path / "ingest" / "manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    with pytest.raises(DataValidationError, match="manifest has the expected columns"):
        validate(params, tmp_path / "ingest", tmp_path / "validate")


def test_failed_validation_is_recorded_as_a_failed_run(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    import mlflow

    root = make_tree()
    (root / "dog" / "bad.png").write_bytes(b"")
    with pytest.raises(DataValidationError):
        check(params, root, tmp_path)
    client = mlflow.MlflowClient()  # the test's store (MLFLOW_TRACKING_URI)
    (run,) = client.search_runs([client.get_experiment_by_name("tlops").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["failed_step"] == "validate_data"
    assert "FAILED 1 rule(s)" in run.data.tags["error"]


def test_an_unreachable_tracking_server_does_not_hide_the_validation_error(
    params: Params,
    make_tree: Tree,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port with nothing behind it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    root = make_tree()
    (root / "dog" / "bad.png").write_bytes(b"")
    with pytest.raises(DataValidationError, match="every file decodes"):
        check(params, root, tmp_path)
    assert "could not record the failure of validate_data in MLflow" in capsys.readouterr().err


def test_a_changed_class_set_fails_unless_params_allow_it(
    params: Params, make_tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(classes=("cat", "dog", "fox", "owl"))  # the data gained a class
    with_registry = with_champion(params, tmp_path, monkeypatch, "cat,dog,fox")
    fails(with_registry, root, tmp_path, "labels are in the expected class set", "owl")
    allowed = with_registry.model_copy(
        update={
            "validate_data": params.validate_data.model_copy(
                update={"allow_class_change": True, "classes": ("cat", "dog", "fox", "owl")}
            )
        }
    )
    result = check(allowed, root, tmp_path / "allowed")
    assert result.passed and result.classes == ["cat", "dog", "fox", "owl"]


def test_a_class_set_other_than_the_champions_is_named_first_in_one_line(
    params: Params, make_tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    root = make_tree(classes=("cat", "dog", "owl"))  # fox is gone, owl is new
    with_registry = with_champion(params, tmp_path, monkeypatch, "cat,dog,fox")
    name = params.register_model.model_name
    message = fails(with_registry, root, tmp_path, "labels are in the expected class set", "owl")
    first, head = message.splitlines()[:2]
    assert first == (
        f"validate_data: the data's classes differ from champion {name} v1's class map: "
        "champion [cat, dog, fox], data [cat, dog, owl] (missing from the data: fox; extra in "
        "the data: owl); to retrain with another class set (a new head), set "
        "validate_data.allow_class_change: true"
    )
    assert head.startswith("validate_data: ") and "FAILED" in head  # then the rules it broke
    out = tmp_path / "out" / "validate"
    report = json.loads((out / "validation.json").read_text())
    assert report["class_conflict"] == first and report["overridden_classes"] is None
    assert (out / "message.txt").read_text().splitlines()[0] == first
    assert first in (out / "summary.md").read_text()
    assert html.escape(first) in (out / "report.html").read_text()  # KFP's view of the step
    # the failed MLflow run's error tag (the message's first line) says why, too
    client = mlflow.MlflowClient(with_registry.tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tlops").experiment_id])
    assert run.data.tags["error"] == first


def test_classes_given_and_overridden_by_the_champion_are_reported(
    params: Params, make_tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlops.runner.execute import execute
    from tlops.steps import spec_of

    name = params.register_model.model_name
    with_registry = with_champion(params, tmp_path, monkeypatch, "cat,dog,fox")
    # -S 'validate_data.classes=[cat, dog, fox, owl]' for data that gained owl: refused, and
    # the one line says the champion's map overrode the classes given
    grown = given_classes(with_registry, "cat", "dog", "fox", "owl")
    message = fails(
        grown,
        make_tree(name="grown_data", classes=("cat", "dog", "fox", "owl")),
        tmp_path / "grown",
        "labels are in the expected class set",
    )
    first = message.splitlines()[0]
    assert f"champion {name} v1's class map: champion [cat, dog, fox]" in first
    assert "(extra in the data: owl); it overrides validate_data.classes [cat, dog, fox, owl]" in (
        first
    )
    assert first.endswith("set validate_data.allow_class_change: true")
    report = json.loads((tmp_path / "grown" / "out" / "validate" / "validation.json").read_text())
    assert report["overridden_classes"] == ["cat", "dog", "fox", "owl"]
    # classes given that the data does not match but the champion does: it passes against the
    # champion's map, and says that the classes given were not used
    shrunk = given_classes(with_registry, "cat", "dog")
    root = make_tree(name="same_data", classes=("cat", "dog", "fox"))
    ingest(shrunk, root, tmp_path / "same" / "ingest")
    out = tmp_path / "same" / "validate"
    result = execute(
        spec_of("validate_data"),
        shrunk,
        {"dataset": tmp_path / "same" / "ingest"},
        {"report": out},
        {},
    )
    note = (
        f"validate_data.classes [cat, dog] is overridden by champion {name} v1's class map "
        "[cat, dog, fox] (validate_data.allow_class_change: true validates against it instead)"
    )
    report = json.loads((out / "validation.json").read_text())
    assert report["passed"] and result.summary.endswith(f"; note: {note}")
    assert report["overridden_classes"] == ["cat", "dog"] and report["class_conflict"] is None
    summary = (out / "summary.md").read_text()
    assert (
        "- validate_data.classes `[cat, dog]`: overridden by "
        f"the class map of champion {name} v1 (MLflow registry)"
    ) in summary
    assert f"  note: {note}" in summary
    # the classes given are the champion's: nothing is overridden, nothing to say
    same = given_classes(with_registry, "cat", "dog", "fox")
    result = execute(
        spec_of("validate_data"),
        same,
        {"dataset": tmp_path / "same" / "ingest"},
        {"report": out},
        {},
    )
    assert "note" not in result.summary
    assert json.loads((out / "validation.json").read_text())["overridden_classes"] is None


def _with_unlabeled(params: Params, folder: Path) -> Params:
    from tlops.config import apply_overrides

    return apply_overrides(params, {"data.target_unlabeled": str(folder)})


def test_an_unlabeled_folder_is_ingested_and_validated_without_label_rules(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    from tlops.data.dataset import load_manifest
    from tlops.data.version import directory_md5

    root = make_tree()
    folder = tmp_path / "unlabeled"
    for i in range(5):  # any nesting; folder names are not labels
        save_image(folder / ("night" if i % 2 else "") / f"u_{i}.png", 1000 + i)
    (folder / ".DS_Store").write_bytes(b"hidden files are ignored")
    (folder / "notes.txt").write_text("not an image")
    with_unlabeled = _with_unlabeled(params, folder)
    result = check(with_unlabeled, root, tmp_path)
    assert result.passed and not result.warnings
    ingest_dir = tmp_path / "out" / "ingest"
    manifest = load_manifest(ingest_dir)
    unlabeled = manifest[manifest["split"] == "unlabeled"]
    assert len(unlabeled) == 5 and set(unlabeled["label"]) == {""}
    assert all((ingest_dir / "images" / p).is_file() for p in unlabeled["path"])
    info = json.loads((ingest_dir / "ingest.json").read_text())
    # the folder's own DVC hash, so `dvc add` of it and the run agree on its version
    assert info["unlabeled"]["data_version"] == directory_md5(folder)
    assert sum(info["counts"]["cat"].values()) == 12  # the class folders' images alone
    report = json.loads((tmp_path / "out" / "validate" / "validation.json").read_text())
    assert report["unlabeled_data_version"] == info["unlabeled"]["data_version"]
    summary = (tmp_path / "out" / "validate" / "summary.md").read_text()
    assert f"unlabeled images: 5 from {folder}" in summary
    assert f"skipped {folder}/notes.txt" in summary


def test_an_unlabeled_copy_of_a_val_or_test_image_is_leakage(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    root = make_tree(per_class=4, splits=("train", "val", "test"))
    folder = tmp_path / "unlabeled"
    folder.mkdir()
    (folder / "seen.png").write_bytes((root / "test" / "dog" / "img_001.png").read_bytes())
    (folder / "fine.png").write_bytes((root / "train" / "dog" / "img_002.png").read_bytes())
    message = fails(
        _with_unlabeled(params, folder),
        root,
        tmp_path,
        "no image shared between splits (leakage)",
        f"{folder}/seen.png = {root}/test/dog/img_001.png",
    )
    # a copy of a training image is no leakage: both are training data
    assert f"{folder}/fine.png = {root}/train/dog/img_002.png" not in message.split("WARNING")[0]


def test_a_broken_or_missing_unlabeled_folder_is_named(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    root = make_tree()
    folder = tmp_path / "unlabeled"
    save_image(folder / "ok.png", 2000)
    (folder / "bad.png").write_text("plain text, not a picture")
    fails(
        _with_unlabeled(params, folder), root, tmp_path, "every file decodes", f"{folder}/bad.png"
    )
    for missing in (tmp_path / "nowhere", tmp_path / "empty"):
        if missing.name == "empty":
            missing.mkdir()
        with pytest.raises(DataDirError, match=str(missing)):
            ingest(_with_unlabeled(params, missing), root, tmp_path / "out" / "again")
        assert not (tmp_path / "out" / "again").exists()


def test_a_labeled_drop_keeps_its_splits_and_wins_over_its_unlabeled_copy(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    from tlops.config import apply_overrides
    from tlops.data.dataset import load_manifest
    from tlops.data.version import directory_md5

    root = make_tree()
    unlabeled = tmp_path / "unlabeled"
    for i in range(4):
        save_image(unlabeled / f"u_{i}.png", 3000 + i)
    drop = tmp_path / "labeled"  # as `tlops labels pull` writes it: u_0 audited, u_1 selected
    (drop / "test" / "cat").mkdir(parents=True)
    (drop / "train" / "dog").mkdir(parents=True)
    (drop / "test" / "cat" / "u_0.png").write_bytes((unlabeled / "u_0.png").read_bytes())
    (drop / "train" / "dog" / "u_1.png").write_bytes((unlabeled / "u_1.png").read_bytes())
    (drop / ".labels.csv").write_text("path,task\n")  # hidden: not scanned
    both = apply_overrides(
        params, {"data.target_unlabeled": str(unlabeled), "data.target_labeled": str(drop)}
    )
    result = check(both, root, tmp_path)
    assert result.passed, result
    ingest_dir = tmp_path / "out" / "ingest"
    manifest = load_manifest(ingest_dir).set_index("path")
    assert manifest.loc["_labeled/test/cat/u_0.png", ["split", "label"]].tolist() == ["test", "cat"]
    assert manifest.loc["_labeled/train/dog/u_1.png", ["split", "label"]].tolist() == [
        "train",
        "dog",
    ]
    # the labeled images left the unlabeled split: the same image in two splits is leakage
    assert sorted(manifest[manifest["split"] == "unlabeled"].index) == [
        "_unlabeled/u_2.png",
        "_unlabeled/u_3.png",
    ]
    assert (ingest_dir / "images" / "_labeled" / "test" / "cat" / "u_0.png").is_file()
    info = json.loads((ingest_dir / "ingest.json").read_text())
    assert info["labeled"]["data_version"] == directory_md5(drop)
    # every cache and comparison keyed by the data version sees the new labels
    assert info["data_version"] == f"{info['folder_data_version']}+{directory_md5(drop)}"
    assert info["folder_data_version"] == directory_md5(root)


def test_a_labeled_drop_without_split_folders_is_refused(
    params: Params, make_tree: Tree, tmp_path: Path
) -> None:
    from tlops.config import apply_overrides

    root = make_tree()
    drop = tmp_path / "labeled"
    save_image(drop / "cat" / "x.png", 4000)
    with pytest.raises(DataDirError, match=rf"{drop}: a labeled drop keeps its splits"):
        ingest(apply_overrides(params, {"data.target_labeled": str(drop)}), root, tmp_path / "o")
    assert not (tmp_path / "o").exists()
