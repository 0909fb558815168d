"""GPU training speed: model-only vs end-to-end from stored JPEGs (paper preset, batch 256).

Model-only: bf16 autocast, channels_last, torch.compile, a fixed random batch already on the GPU.
End-to-end: ``model.network.train.train`` on generated 256x256 JPEGs with the decoded cache disabled, so every
batch is read as JPEG bytes, decoded with ``torchvision.io.decode_jpeg(device="cuda")`` (prefetched by
threads) and cropped/flipped/normalised on the GPU. Prints both and their ratio (target >= 70%), and on a
GPU records them in BENCHMARKS.md under "Training (GPU)".

    python benchmarks/gpu_train.py            # on a CUDA machine
    python benchmarks/gpu_train.py --small    # tiny sizes, runs anywhere (checks the script works)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torchvision.io import encode_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.data import dataset  # noqa: E402
from model.data.dataset import labels_file  # noqa: E402
from model.network.caffenet import CaffeNetBN  # noqa: E402
from model.settings import TRAIN_PRESETS  # noqa: E402
from model.network.train import train  # noqa: E402
from report import BENCHMARKS, write_section

CLASSES = 30


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(settings, device: torch.device, steps: int, compile_model: bool) -> float:
    torch.manual_seed(0)
    model = CaffeNetBN(CLASSES, settings.crop_size, settings.fc_width).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    trained = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(settings.batch_size, 3, settings.crop_size, settings.crop_size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, CLASSES, (settings.batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(trained(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(max(3, steps // 5)):   # compile and autotune outside the timing
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * settings.batch_size / (time.perf_counter() - start)


def make_dataset(root: Path, frames: int, workers: int) -> None:
    rng = np.random.default_rng(0)
    (root / "videos").mkdir()

    def encode(i: int) -> str:
        # Smooth random images compress like photographs; pure noise would make unrealistically big JPEGs.
        small = torch.from_numpy(np.random.default_rng(i).integers(0, 256, (3, 16, 16), dtype=np.uint8))
        image = torch.nn.functional.interpolate(small[None].float(), size=(256, 256), mode="bilinear")[0]
        path = f"videos/frame_{i:07d}.jpg"
        (root / path).write_bytes(encode_jpeg(image.to(torch.uint8), quality=90).numpy().tobytes())
        return path

    with ThreadPoolExecutor(workers) as pool:
        paths = list(pool.map(encode, range(frames)))
    records = [dataset.FrameRecord(i, f"v{i // 10}", f"v{i // 10}.mp4", i % 10, float(i % 10), path, "clip.mp3",
                                   "test" if i % 50 == 0 else "train", False) for i, path in enumerate(paths)]
    dataset.write_manifest(root, records, rng.normal(size=(frames, 502)), rng.normal(size=(frames, 32)))
    (root / "labels").mkdir()
    np.savez(labels_file(root, "cluster"), kind="cluster", k=CLASSES, labels=rng.integers(0, CLASSES, frames),
             keep=np.array([r.split == "train" for r in records]))


def end_to_end(root: Path, settings, device: torch.device, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        train(root, "cluster", Path(run_dir) / "run", replace(settings, epochs=epochs), device, progress=False)
        rows = [json.loads(line) for line in (Path(run_dir) / "run" / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(row["images_per_s"] for row in rows[1:])   # the first epoch includes compiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes on any device, to check the script")
    parser.add_argument("--frames", type=int, default=16_384, help="generated JPEGs (end-to-end epoch size)")
    parser.add_argument("--steps", type=int, default=100, help="timed model-only steps")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = replace(TRAIN_PRESETS["paper"], cache_bytes=0, evals_per_epoch=4, checkpoint_steps=10**9)
    frames, steps, epochs = args.frames, args.steps, 2
    if args.small:
        settings = replace(TRAIN_PRESETS["tiny"], cache_bytes=0, batch_size=16, evals_per_epoch=2,
                           compile=device.type == "cuda")
        frames, steps, epochs = 160, 4, 2
    model_rate = model_only(settings, device, steps, compile_model=settings.compile and device.type == "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp), frames, os.cpu_count() or 1)
        e2e_rate = end_to_end(Path(tmp), settings, device, epochs)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
    print(f"{card}: model-only {model_rate:,.0f} images/s, end-to-end from JPEG {e2e_rate:,.0f} images/s, "
          f"ratio {e2e_rate / model_rate:.0%} (target >= 70%, >= 15,000 images/s)")
    recorded = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    if device.type != "cuda" and "## Training (GPU)" not in recorded:
        write_section("Training (GPU)", f"""\
`benchmarks/gpu_train.py` (paper preset, batch 256, bf16, channels_last, torch.compile; end to end from stored
JPEGs decoded on the GPU): **still open**, no GPU was available ({datetime.date.today().isoformat()}). The script
was checked on the CPU with `--small`. Target: >= 15,000 images/s end to end, >= 70% of model-only.
""")
    if device.type == "cuda" and not args.small:
        write_section("Training (GPU)", f"""\
`benchmarks/gpu_train.py`: paper preset (227px crops of 256px frames, batch 256), bf16 autocast, channels_last,
torch.compile. Card: {card}; {os.cpu_count()} CPU cores; torch {torch.__version__}; {datetime.date.today().isoformat()}.

| measure | images/s |
|---|---|
| model only (a fixed random batch on the GPU) | {model_rate:,.0f} |
| end to end from {frames:,} stored JPEGs (GPU decode, crop, flip, normalise) | {e2e_rate:,.0f} |
| ratio | {e2e_rate / model_rate:.0%} |
""")


if __name__ == "__main__":
    main()
