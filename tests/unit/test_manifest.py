"""Scanning ImageFolder trees: layouts, stable hash splits, odd files, streaming."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import repo_params, save_image, symlink
from tlops.config import SplitFractions
from tlops.data.manifest import DataDirError, hash_split, scan_image_folder

CFG = repo_params().image
FRACTIONS = repo_params().ingest_data.split


def scan(root: Path, salt: str = "s", **kwargs: object):  # type: ignore[no-untyped-def]
    return scan_image_folder(root, CFG, FRACTIONS, salt, **kwargs)  # type: ignore[arg-type]


def test_flat_layout(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=10)
    result = scan(root)
    assert result.classes == ["cat", "dog", "fox"]
    assert len(result.rows) == 30 and not result.explicit_splits
    row = result.rows[0]
    assert row.path == "cat/img_000.png" and row.label == "cat"
    assert (row.width, row.height, row.mode, row.decode_status) == (16, 16, "L", "ok")
    assert len(row.sha256) == 64 and row.bytes > 0
    assert {r.split for r in result.rows} <= {"train", "val", "test"}


def test_explicit_split_layout(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=2, splits=("train", "val", "test"))
    result = scan(root)
    assert result.explicit_splits
    assert Counter(r.split for r in result.rows) == {"train": 6, "val": 6, "test": 6}
    assert all(r.path.startswith(f"{r.split}/{r.label}/") for r in result.rows)


def test_mixed_layout_is_an_error(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=1)
    save_image(root / "train" / "cat" / "x.png", 999)
    with pytest.raises(DataDirError, match="mixed layout"):
        scan(root)


def test_missing_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match="does not exist") as info:
        scan(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataDirError, match="no class folders"):
        scan(tmp_path / "empty")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "a.png").write_bytes(b"x")
    with pytest.raises(DataDirError, match="no class folders"):
        scan(tmp_path / "loose")


def test_hash_split_is_stable_when_data_grows(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=30)
    before = {r.path: r.split for r in scan(root).rows}
    for i in range(40):
        save_image(root / "cat" / f"new_{i}.png", 10_000 + i)
    after = {r.path: r.split for r in scan(root).rows}
    assert len(after) == len(before) + 40
    assert all(after[path] == split for path, split in before.items())


def test_hash_split_follows_fractions_and_salt() -> None:
    hashes = [f"{i:064x}" for i in range(6000)]
    fractions = SplitFractions(train=0.7, val=0.15, test=0.15)  # what the counts below expect
    counts = Counter(hash_split(h, fractions, "a") for h in hashes)
    assert abs(counts["train"] / 6000 - 0.7) < 0.03
    assert abs(counts["test"] / 6000 - 0.15) < 0.03
    other = [hash_split(h, fractions, "b") for h in hashes]
    assert other != [hash_split(h, fractions, "a") for h in hashes]


def test_identical_files_share_a_split(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=3)
    (root / "dog" / "copy.png").write_bytes((root / "cat" / "img_000.png").read_bytes())
    rows = {r.path: r for r in scan(root).rows}
    assert rows["dog/copy.png"].split == rows["cat/img_000.png"].split


def test_stray_files_are_skipped_and_reported(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=2)
    (root / "README.txt").write_text("about this data")
    (root / "labels.csv").write_text("a,b")
    (root / ".DS_Store").write_bytes(b"\0\0")
    (root / "cat" / "notes.txt").write_text("hi")
    result = scan(root)
    skipped = {s.path: s.reason for s in result.skipped}
    assert skipped["README.txt"] == "not inside a class folder"
    assert "labels.csv" in skipped
    assert "extension" in skipped["cat/notes.txt"]
    assert ".DS_Store" not in skipped
    assert len(result.rows) == 6


def test_symlink_outside_root_is_never_read(make_tree: Callable[..., Path], tmp_path: Path) -> None:
    root = make_tree(per_class=2)
    secret = save_image(tmp_path / "elsewhere" / "secret.png", 77)
    symlink(secret, root / "cat" / "link.png")
    symlink(tmp_path / "elsewhere", root / "dog" / "linked_dir")
    save_image(root / "fox" / "real.png", 78)
    symlink(root / "fox" / "real.png", root / "fox" / "inside.png")
    rows = {r.path: r for r in scan(root).rows}
    assert rows["cat/link.png"].decode_status == "symlink_outside_root"
    assert rows["cat/link.png"].sha256 == ""
    assert "outside the data root" in rows["cat/link.png"].error
    assert rows["dog/linked_dir"].decode_status == "symlink_outside_root"
    assert rows["fox/inside.png"].decode_status == "ok"


def test_non_ascii_names(make_tree: Callable[..., Path]) -> None:
    root = make_tree(classes=("chat", "café", "猫"), per_class=2)
    save_image(root / "café" / "ñandú 1.png", 5)
    result = scan(root)
    assert "café" in result.classes and "猫" in result.classes
    assert any(r.path == "café/ñandú 1.png" and r.decode_status == "ok" for r in result.rows)


def test_empty_class_folder_is_listed(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=2)
    (root / "owl").mkdir()
    result = scan(root)
    assert "owl" in result.classes
    assert not any(r.label == "owl" for r in result.rows)


def test_sink_receives_exactly_the_scanned_bytes(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=2)
    (root / "cat" / "bad.png").write_text("nope")
    received: dict[str, bytes] = {}
    scan(root, sink=lambda rel, data: received.__setitem__(rel, data))
    assert "cat/bad.png" not in received
    assert received["dog/img_001.png"] == (root / "dog" / "img_001.png").read_bytes()


def test_scan_streams_images(make_tree: Callable[..., Path]) -> None:
    # 300 noisy 96x96 RGB PNGs are ~8 MB on disk and ~8 MB decoded; a scan that held them all
    # would peak far above the bound below.
    root = make_tree(per_class=100, size=96)
    for seed, path in enumerate(sorted(root.rglob("*.png"))):
        save_image(path, seed, 96, "RGB")
    total = sum(p.stat().st_size for p in root.rglob("*.png"))
    assert total > 6_000_000
    tracemalloc.start()
    result = scan(root)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(result.rows) == 300
    assert peak < total / 4, f"peak {peak:,} bytes while scanning {total:,} bytes of images"
