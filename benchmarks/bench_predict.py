"""Hear an image, speed: per image on the CPU (2 threads), what `ambient predict` and the listen page do:
decode a 640x480 JPEG, scale and crop it, run the paper's full-size CaffeNet (227 crops, fc 4096, 30
clusters) forward and back to conv5 for Grad-CAM, rank the units, colour the heatmap over the crop and
encode it as PNG. The weights are random: the time does not depend on them. Median and 90th percentile
over the images, after a warm-up."""
from __future__ import annotations

import datetime
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.data import dataset as ds  # noqa: E402
from model.units import predict as pr  # noqa: E402
from model.network.caffenet import IMAGE_MEAN, IMAGE_STD  # noqa: E402
from model.network.run import FINAL_MODEL, RunInfo, write_run_json  # noqa: E402
from report import write_section  # noqa: E402

IMAGES, WARMUP, THREADS, K = 30, 3, 2, 30


def full_size_run(root: Path) -> Path:
    """A run folder with full-size random weights and cluster labels (k=30) for its textures."""
    run, data = root / "run", root / "data"
    run.mkdir()
    (data / ds.LABELS_DIR).mkdir(parents=True)
    info = RunInfo("cluster", K, False, 256, 227, 4096, IMAGE_MEAN, IMAGE_STD)
    torch.manual_seed(0)
    torch.save({"model": info.build_model().state_dict(), "run": asdict(info), "step": 0}, run / FINAL_MODEL)
    write_run_json(run, info, {"data_dir": str(data)})
    np.savez(ds.labels_file(data, "cluster"), kind="cluster", k=K, centroids=np.random.default_rng(0).random((K, 502)),
             weights=np.ones(502))
    return run


def jpegs(count: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        base = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(base).resize((640, 480), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def main() -> None:
    torch.set_num_threads(THREADS)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as root:
        predictor = pr.load_predictor(full_size_run(Path(root)))
        images = jpegs(IMAGES + WARMUP)
        times, cpu_times = [], []
        for i, data in enumerate(images):
            start, cpu = time.perf_counter(), time.process_time()
            image = pr.decode_image(data, f"image {i}", 40_000_000)
            (result,) = pr.predict(predictor, pr.image_frame(image, predictor.frame_size)[None])
            pr.png_bytes(pr.heatmap_overlay(result.crop, result.heatmap))
            if i >= WARMUP:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu)
    median, cpu_median = statistics.median(times), statistics.median(cpu_times)
    p90 = sorted(times)[int(0.9 * len(times)) - 1]
    load_after = os.getloadavg()
    print(f"predict with heatmap: median {median * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f} ms per image; CPU {cpu_median * 1000:.0f} ms; load {load[0]:.1f} -> {load_after[0]:.1f}")
    write_section("Hear an image: prediction with heatmap", f"""\
`benchmarks/bench_predict.py`: per image on the CPU with {THREADS} torch threads: decode a 640x480 JPEG,
scale and crop it, the full-size CaffeNet (227 crops, fc 4096, {K} clusters) forward and back to conv5
(Grad-CAM), the firing units, the heatmap coloured over the crop and encoded as PNG (`model/units/predict.py`).
{IMAGES} images after {WARMUP} warm-up ones. Goal: < 0.3 s per image on 2 cores. CPU time is both
threads' together, which other work on the machine inflates far less than the wall time: on 2 idle cores the wall time would be
between half of it (both threads busy throughout) and all of it.

| wall median | 90th percentile | fastest | slowest | CPU time per image (median) |
|---|---|---|---|---|
| {median * 1000:.0f} ms | {p90 * 1000:.0f} ms | {min(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms | {cpu_median * 1000:.0f} ms |

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other work (1-minute
load {load[0]:.1f} before, {load_after[0]:.1f} after); torch {torch.__version__}; {datetime.date.today()}.
""")


if __name__ == "__main__":
    main()
