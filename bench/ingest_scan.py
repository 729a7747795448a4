"""Benchmark: scanning 10,000 images with ingest_data's scanner vs. a load-everything baseline.

Both variants run in child processes of this one run, on the same freshly written images, so
their peak resident memory (ru_maxrss) and wall times are comparable. The baseline is what a
naive ingester does: read and decode every image into a list, then hash and describe them.

    .venv/bin/python bench/ingest_scan.py [--images 10000] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from machine import describe

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import hashlib, json, resource, sys, time
from pathlib import Path
from PIL import Image
root, variant, params = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
start = time.perf_counter()
if variant == "tlops":
    import yaml
    from tlops.config import ImageConfig, SplitFractions
    from tlops.data.manifest import scan_image_folder
    # the two sections the scanner reads, from params.yaml (the models have no defaults)
    raw = yaml.safe_load(params.read_text())
    image_cfg = ImageConfig.model_validate(raw["image"])
    fractions = SplitFractions.model_validate(raw["ingest_data"]["split"])
    rows = scan_image_folder(root, image_cfg, fractions, "bench").rows
    n = len(rows)
else:
    blobs = [p.read_bytes() for p in sorted(root.rglob("*.png"))]
    images = []
    for p in sorted(root.rglob("*.png")):
        im = Image.open(p); im.load(); images.append(im.convert("RGB"))
    rows = [(hashlib.sha256(b).hexdigest(), im.size, im.mode) for b, im in zip(blobs, images)]
    n = len(rows)
elapsed = time.perf_counter() - start
print(json.dumps({"n": n, "seconds": elapsed,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_images(root: Path, count: int, size: int) -> int:
    rng = np.random.default_rng(0)
    total = 0
    for i in range(count):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        total += path.stat().st_size
    return total


def run_child(root: Path, variant: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), variant, str(REPO / "params.yaml")],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        on_disk = write_images(root, args.images, args.size)
        results = {variant: run_child(root, variant) for variant in ("baseline", "tlops")}
    base, ours = results["baseline"], results["tlops"]
    print(f"machine: {describe()}")
    print(
        f"{args.images} PNG images of {args.size}x{args.size} RGB, {on_disk / 1e6:.1f} MB on disk"
    )
    print("| variant | images/s | peak RSS (MB) |")
    print("|---|---|---|")
    for name, r in (("load-everything baseline", base), ("tlops scan_image_folder", ours)):
        print(f"| {name} | {r['n'] / r['seconds']:.0f} | {r['max_rss_mb']:.0f} |")
    print(
        f"peak RSS ratio tlops/baseline: {ours['max_rss_mb'] / base['max_rss_mb']:.2f}; "
        f"throughput ratio: {base['seconds'] / ours['seconds']:.2f}x"
    )


if __name__ == "__main__":
    main()
