"""The embedded demo data: drops, the drifted drop and the unlabeled drop are deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from tlops.data.demo import demo_size, digits_target, drifted, write_demo, write_unlabeled


def _digest(root: Path) -> str:
    files = sorted(p for p in root.rglob("*.png"))
    return hashlib.sha256(
        b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)
    ).hexdigest()


def test_drifted_drop_is_the_last_drop_inverted(tmp_path: Path) -> None:
    plain = write_demo(tmp_path / "s", tmp_path / "plain", drops=1)
    assert plain.source_images == 5000 == len(list((tmp_path / "s").rglob("*.png")))
    drift = write_demo(None, tmp_path / "drift", drops=1, drift=True)  # the target only
    assert drift.source_images == 0
    extra = sorted((tmp_path / "drift").rglob("drift_digits_*.png"))
    assert drift.target_images == plain.target_images + len(extra) > plain.target_images
    assert demo_size(1, 0, drift=True) == 5000 + drift.target_images
    assert demo_size(1, 0, drift=True, source=False) == drift.target_images
    # each drifted image is the inverse of that digit, in that digit's class folder
    sample = extra[0]
    index = int(sample.stem.rsplit("_", 1)[1])
    images, labels = digits_target()
    assert sample.parent.name == str(labels[index])
    assert np.array_equal(np.asarray(Image.open(sample)), drifted(images[index]))
    again = write_demo(None, tmp_path / "again", drops=1, drift=True)
    assert again.target_images == drift.target_images
    assert _digest(tmp_path / "drift") == _digest(tmp_path / "again")


def test_unlabeled_drop_has_no_class_folders(tmp_path: Path) -> None:
    count = write_unlabeled(tmp_path / "unlabeled")
    files = list((tmp_path / "unlabeled").iterdir())
    assert count == len(files) > 0 and all(f.is_file() and f.suffix == ".png" for f in files)
    assert all(f.name.startswith("unlabeled_") for f in files)  # no label in the name either
    write_unlabeled(tmp_path / "again")
    assert _digest(tmp_path / "unlabeled") == _digest(tmp_path / "again")
