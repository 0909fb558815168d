"""Dissection of a still-image pool with masks: `ambient units` (top images, masks, the streaming top-0.5%
quantiles) then `ambient dissect --masks` (pool-wide IoU, top-image precision) on >= 10,000 generated
images with label maps, on this machine's CPU; peak memory at two pool sizes shows it does not grow
with the pool.

    .venv/bin/python benchmarks/bench_dissect.py [--images 10000] [--small 2500] [--repeats 3]

Each stage of each measurement runs in a child process (its peak RSS is its own). The network is a random
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

    from model.network.run import FINAL_MODEL, RunInfo
    from model.settings import TRAIN_PRESETS

    preset = TRAIN_PRESETS["tiny"]
    run_dir.mkdir(parents=True, exist_ok=True)
    info = RunInfo("cluster", 8, False, preset.frame_size, preset.crop_size, preset.fc_width,
                   (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    torch.manual_seed(0)
    torch.save({"model": info.build_model().state_dict(), "run": asdict(info), "step": 0}, run_dir / FINAL_MODEL)


def child(root: Path, count: int, stage: str) -> dict:
    """One stage ("units" or "dissect") over the first ``count`` images (a pool folder of its own)."""
    from model.units.dissect import dissect_masks
    from model.settings import UNITS
    from model.units.top_images import extract_units

    imported_mb = _peak_mb()          # torch, torchvision and the pipeline, before any work
    pool = root / f"pool_{count}"
    images, masks = pool / "images", root / "all" / "masks"
    run_dir = root / f"run_{count}"
    settings = replace(UNITS, workers=2)
    start = time.perf_counter()
    if stage == "units":
        if not images.exists():
            images.mkdir(parents=True)
            for path in sorted((root / "all" / "images").iterdir())[:count]:
                os.symlink(path, images / path.name)
        make_run(run_dir)
        extract_units(run_dir, images, settings, show_progress=False)
        result = {}
    else:
        labels, scores = dissect_masks(run_dir, masks, root / "all" / "classes.csv", settings=settings,
                                       show_progress=False)
        result = {"with_masks": scores.images,
                  "netdissect_labelled": sum(label.netdissect_category is not None for label in labels)}
    return {**result, "images": count, f"{stage}_s": time.perf_counter() - start,
            f"{stage}_peak_mb": _peak_mb(), "imported_mb": imported_mb}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(root: Path, count: int) -> dict:
    """Both stages, each in a child process of its own."""
    result = {}
    for stage in ("units", "dissect"):
        out = subprocess.run([sys.executable, __file__, "--child", str(count), "--stage", stage, "--root", str(root)],
                             capture_output=True, text=True, check=True).stdout
        result.update(json.loads(out.strip().splitlines()[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_500)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the small pool (the median is reported)")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--child", type=int, default=None)
    parser.add_argument("--stage", choices=("units", "dissect"), default="units")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.root, args.child, args.stage)))
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
    median = {key: statistics.median(run[key] for run in small)
              for key in ("units_s", "dissect_s", "units_peak_mb", "dissect_peak_mb", "imported_mb")}
    rate = lambda run, key: run["images"] / run[key]    # noqa: E731
    body = f"""
`benchmarks/bench_dissect.py`: a folder of {args.images:,} generated {SIZE[0]}x{SIZE[1]} JPEGs with label-map PNGs
(4 classes), a random CaffeNet-BN of the "tiny" preset (80 px frames, 67 px crops, 256 conv5 units), on the
CPU: `ambient units` (forward pass, top-60, streaming top-0.5% quantiles, 256 x 60 masked images) then
`ambient dissect --masks` (second forward pass, upsampled maps against the masks of every image, top-image
precision). Each stage is a child process; peak RSS is the whole process's: importing torch,
torchvision and the pipeline alone takes {median['imported_mb']:.0f} MB.

| pool | units (s) | units (images/s) | units peak RSS (MB) | dissect (s) | dissect (images/s) | dissect peak RSS (MB) |
|---|---|---|---|---|---|---|
| {args.small:,} images (median of {args.repeats}) | {median['units_s']:.1f} | {args.small / median['units_s']:.0f} | {median['units_peak_mb']:.0f} | {median['dissect_s']:.1f} | {args.small / median['dissect_s']:.0f} | {median['dissect_peak_mb']:.0f} |
| {args.images:,} images (one run) | {large['units_s']:.1f} | {rate(large, 'units_s'):.0f} | {large['units_peak_mb']:.0f} | {large['dissect_s']:.1f} | {rate(large, 'dissect_s'):.0f} | {large['dissect_peak_mb']:.0f} |

For {args.images / args.small:.0f}x the images, `ambient dissect --masks` peaks at {large['dissect_peak_mb'] / median['dissect_peak_mb']:.2f}x
the memory: its state is the quantile thresholds, the IoU tally (256 x classes sums) and the precision
counts, whatever the pool; the quantile sketch during `ambient units` is a fixed 256 x {_buckets()} int64
counts (relative error 0.5% on the threshold value, `model.units.activations.RunningQuantile`). `ambient units`
peaks at {large['units_peak_mb'] / median['units_peak_mb']:.2f}x: it keeps the decoded crop of every distinct top image to mask
(at most 256 units x 60 = 15,360 crops, so this stops growing once the pool is larger), as it did before
still-image pools. {large['netdissect_labelled']} of 256 random units have a Network Dissection label
(IoU > 0.04) on the {args.images:,}-image pool. The time is mostly the upsampled maps against the masks:
256 maps of 67 x 67 pixels per image.

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores shared with other work
(load average {load:.1f} at the start), torch {_torch_version()}; {date.today().isoformat()}. No GPU was available
for this measurement.
"""
    write_section("Dissection with masks (bench_dissect)", body)
    print(body)


def _buckets() -> int:
    from model.units.activations import RunningQuantile
    from model.settings import UNITS
    return RunningQuantile(1 - UNITS.top_quantile, UNITS.quantile_error).buckets


def _torch_version() -> str:
    import torch
    return torch.__version__


if __name__ == "__main__":
    main()
