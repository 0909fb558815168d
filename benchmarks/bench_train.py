"""Training speed on this CPU for the demo preset: model-only and end-to-end images/s (median of 3).

Model-only: forward + backward + SGD step on random tensors. End-to-end: ``model.network.train.train`` on a
generated dataset of 256x256 JPEGs (decoded once to the uint8 cache, then crop/flip/normalise per batch),
as reported in its metrics (evaluation and checkpointing excluded).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.data import dataset  # noqa: E402
from model.data.dataset import labels_file  # noqa: E402
from model.network.caffenet import CaffeNetBN  # noqa: E402
from model.settings import TRAIN_PRESETS  # noqa: E402
from model.network.train import train  # noqa: E402
from report import write_section

PRESET, REPEATS, MODEL_STEPS, FRAMES, CLASSES = "demo", 3, 5, 640, 30
# The demo world: 800 videos x 10 frames, ~6,400 in the training split, the half nearest their centroid kept.
DEMO_KEPT_FRAMES = 3200


def model_only(settings) -> float:
    model = CaffeNetBN(CLASSES, settings.crop_size, settings.fc_width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(settings.batch_size, 3, settings.crop_size, settings.crop_size)
    targets = torch.randint(0, CLASSES, (settings.batch_size,))
    step_times = []
    for _ in range(MODEL_STEPS + 1):   # the first step warms up allocators
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
    return settings.batch_size / statistics.median(step_times[1:])


def make_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    records = []
    (root / "videos").mkdir()
    for i in range(FRAMES):
        image = f"videos/frame_{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(root / image, quality=90)
        records.append(dataset.FrameRecord(i, f"v{i // 10}", f"v{i // 10}.mp4", i % 10, float(i % 10), image,
                                           "clip.mp3", "test" if i % 10 == 0 else "train", False))
    dataset.write_manifest(root, records, rng.normal(size=(FRAMES, 502)), rng.normal(size=(FRAMES, 32)))
    (root / "labels").mkdir()
    np.savez(labels_file(root, "cluster"), kind="cluster", k=CLASSES, labels=rng.integers(0, CLASSES, FRAMES),
             keep=np.array([r.split == "train" for r in records]))


def end_to_end(root: Path, settings) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        train(root, "cluster", Path(run_dir) / "run", settings, "cpu", progress=False)
        rows = [json.loads(line) for line in (Path(run_dir) / "run" / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["images_per_s"]


def main() -> None:
    settings = TRAIN_PRESETS[PRESET]
    torch.set_num_threads(os.cpu_count() or 1)
    model_rates = [model_only(settings) for _ in range(REPEATS)]
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp))
        # One epoch of the generated set, evaluated once at its end.
        e2e_rates = [end_to_end(Path(tmp), replace(settings, epochs=1)) for _ in range(REPEATS)]
    model_rate, e2e_rate = statistics.median(model_rates), statistics.median(e2e_rates)
    steps_demo = TRAIN_PRESETS[PRESET].epochs * DEMO_KEPT_FRAMES / settings.batch_size
    print(f"demo preset ({settings.crop_size}px crops, batch {settings.batch_size}): model-only {model_rate:.1f} "
          f"images/s, end-to-end {e2e_rate:.1f} images/s ({e2e_rate / model_rate:.0%})")
    write_section("Training (CPU)", f"""\
`benchmarks/bench_train.py`: CaffeNet-BN training, `--preset demo` ({settings.frame_size}px frames,
{settings.crop_size}px crops, fc {settings.fc_width}, batch {settings.batch_size}), fp32, median of {REPEATS} repeats.
Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__};
{datetime.date.today().isoformat()}; load average {os.getloadavg()[0]:.1f} at the end (other work shares the cores).

| measure | images/s |
|---|---|
| model only (random tensors) | {model_rate:.1f} |
| end to end (JPEG cache, crop/flip/normalise, {FRAMES} frames) | {e2e_rate:.1f} |

At this rate the demo run ({DEMO_KEPT_FRAMES:,} kept training frames, {TRAIN_PRESETS[PRESET].epochs} epochs)
(~{steps_demo:.0f} steps) takes about {steps_demo * settings.batch_size / e2e_rate / 60:.1f} minutes plus evaluation.
""")


if __name__ == "__main__":
    main()
