"""Dissection of a still-image pool with masks: `ambient units` (top images, masks, the streaming top-0.5%
quantiles) then `ambient dissect --masks` (pool-wide IoU, top-image precision) on >= 10,000 generated
images with label maps, on this machine's CPU; peak memory at two pool sizes shows it does not grow
with the pool.

    .venv/bin/python benchmarks/bench_dissect.py [--images 10000] [--small 2500] [--repeats 3]

Each measurement runs in a child process (its peak RSS is its own). The network is a random
CaffeNet-BN of the "tiny" training preset (80 px frames, 67 px crops, 256 conv5 units): the point is
the pipeline's cost per image and its memory, not a network's quality.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report import write_section  # noqa: E402

CLASSES = [(1, "road"), (2, "sky"), (3, "water"), (4, "car")]
SIZE = (64, 48)      # width, height: small still images, not square


def make_pool(root: Path, count: int) -> tuple[Path, Path, Path]:
    """``count`` images (sky over road, a water patch and a car patch in shades) with label maps."""
    from PIL import Image

    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = SIZE
    for i in range(count):
        label = np.ones((height, width), np.uint8)
        label[: rng.integers(10, 24)] = 2
        image = np.where((label == 2)[..., None], [120, 160, 230], [90, 90, 90]).astype(np.uint8)
        for value, colour in ((3, [20, 60, 200]), (4, [200, 30, 30])):
            top, left = rng.integers(4, height - 12), rng.integers(4, width - 12)
            label[top:top + 8, left:left + 8] = value
            image[top:top + 8, left:left + 8] = colour
        image = np.clip(image + rng.integers(-15, 15, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(images / f"{i:06d}.jpg", quality=90)
        Image.fromarray(label).save(masks / f"{i:06d}.png")
    classes = root / "classes.csv"
    classes.write_text("index,name\n" + "".join(f"{index},{name}\n" for index, name in CLASSES))
    return images, masks, classes


def make_run(run_dir: Path) -> None:
    import torch

    from model.run import FINAL_MODEL, RunInfo
    from model.settings import TRAIN_PRESETS

    preset = TRAIN_PRESETS["tiny"]
    run_dir.mkdir(parents=True, exist_ok=True)
    info = RunInfo("cluster", 8, False, preset.frame_size, preset.crop_size, preset.fc_width,
                   (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    torch.manual_seed(0)
    torch.save({"model": info.build_model().state_dict(), "run": asdict(info), "step": 0}, run_dir / FINAL_MODEL)


def child(root: Path, count: int) -> dict:
    """One measurement: units then dissect over the first ``count`` images (a pool folder of its own)."""
    from model.dissect import dissect_masks
    from model.settings import UNITS
    from model.units import extract_units

    pool = root / f"pool_{count}"
    images, masks = pool / "images", root / "all" / "masks"
    if not images.exists():
        images.mkdir(parents=True)
        for path in sorted((root / "all" / "images").iterdir())[:count]:
            os.symlink(path, images / path.name)
    run_dir = root / f"run_{count}"
    make_run(run_dir)
    settings = replace(UNITS, workers=2)
    start = time.perf_counter()
    extract_units(run_dir, images, settings, show_progress=False)
    units_s = time.perf_counter() - start
    start = time.perf_counter()
    labels, scores = dissect_masks(run_dir, masks, root / "all" / "classes.csv", settings=settings, show_progress=False)
    dissect_s = time.perf_counter() - start
    return {"images": count, "units_s": units_s, "dissect_s": dissect_s, "with_masks": scores.images,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "netdissect_labelled": sum(label.netdissect_category is not None for label in labels)}


def measure(root: Path, count: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(count), "--root", str(root)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_500)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the small pool (the median is reported)")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--child", type=int, default=None)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.root, args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        start = time.perf_counter()
        make_pool(root / "all", args.images)
        print(f"generated {args.images} images and label maps in {time.perf_counter() - start:.0f} s", flush=True)
        load = os.getloadavg()[0]
        small = [measure(root, args.small) for _ in range(args.repeats)]
        print(small, flush=True)
        large = measure(root, args.images)
        print(large, flush=True)
    median = {key: statistics.median(run[key] for run in small) for key in ("units_s", "dissect_s", "peak_rss_mb")}
    rate = lambda run, key: run["images"] / run[key]    # noqa: E731
    body = f"""
`benchmarks/bench_dissect.py`: a folder of {args.images:,} generated {SIZE[0]}x{SIZE[1]} JPEGs with label-map PNGs
(4 classes), a random CaffeNet-BN of the "tiny" preset (80 px frames, 67 px crops, 256 conv5 units), on the
CPU: `ambient units` (forward pass, top-60, streaming top-0.5% quantiles, 256 x 60 masked images) then
`ambient dissect --masks` (second forward pass, upsampled maps against the masks of every image, top-image
precision). Each run is a child process; peak RSS is the whole process's (torch included).

| pool | units (s) | units (images/s) | dissect (s) | dissect (images/s) | peak RSS (MB) |
|---|---|---|---|---|---|
| {args.small:,} images (median of {args.repeats}) | {median['units_s']:.1f} | {args.small / median['units_s']:.0f} | {median['dissect_s']:.1f} | {args.small / median['dissect_s']:.0f} | {median['peak_rss_mb']:.0f} |
| {args.images:,} images (one run) | {large['units_s']:.1f} | {rate(large, 'units_s'):.0f} | {large['dissect_s']:.1f} | {rate(large, 'dissect_s'):.0f} | {large['peak_rss_mb']:.0f} |

Memory: {large['peak_rss_mb'] / median['peak_rss_mb']:.2f}x the small pool's peak for {args.images / args.small:.0f}x the
images. What grows with the pool is only the list of its image paths; the quantile sketch is a fixed
256 x {_buckets()} int64 counts per layer (relative error 0.5% on the threshold value, see
`model.activations.RunningQuantile`), the IoU tally 256 x classes sums. {large['netdissect_labelled']} of 256 random
units have a Network Dissection label (IoU > 0.04) on the {args.images:,}-image pool.

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores shared with other work
(load average {load:.1f} at the start), torch {_torch_version()}; {date.today().isoformat()}. No GPU was available
for this measurement.
"""
    write_section("Dissection with masks (bench_dissect)", body)
    print(body)


def _buckets() -> int:
    from model.activations import RunningQuantile
    from model.settings import UNITS
    return RunningQuantile(1 - UNITS.top_quantile, UNITS.quantile_error).buckets


def _torch_version() -> str:
    import torch
    return torch.__version__


if __name__ == "__main__":
    main()
