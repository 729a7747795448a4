"""The data version: DVC's directory md5, computed without DVC."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.helpers import save_image
from tlops.data.version import data_version, directory_md5


def test_md5_is_order_and_mtime_independent(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=3)
    first = directory_md5(root)
    for path in root.rglob("*.png"):
        os.utime(path, (1, 1))
    assert directory_md5(root) == first
    assert first.endswith(".dir") and len(first) == 36


def test_md5_changes_with_any_file(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=3)
    first = directory_md5(root)
    save_image(root / "cat" / "img_000.png", 12345)
    assert directory_md5(root) != first
    (root / "notes.txt").write_text("x")  # DVC hashes every file, not only images
    second = directory_md5(root)
    (root / "notes.txt").unlink()
    assert second != directory_md5(root)


def test_known_md5s_are_reused(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=1)
    real = directory_md5(root)
    fake = directory_md5(root, {"cat/img_000.png": "0" * 32})
    assert fake != real


def test_version_source_follows_the_dvc_file(make_tree: Callable[..., Path]) -> None:
    root = make_tree(per_class=2)
    assert data_version(root).source == "content"
    md5 = directory_md5(root)
    dvc_file = root.with_name(root.name + ".dvc")
    dvc_file.write_text(f"outs:\n- md5: {md5}\n  path: {root.name}\n")
    version = data_version(root)
    assert (version.md5, version.source) == (md5, "dvc")
    save_image(root / "cat" / "new.png", 999)
    changed = data_version(root)
    assert changed.source == "content" and changed.md5 != md5
    assert "dvc add" in changed.note
