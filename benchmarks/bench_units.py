"""Units: conv5 forward + running top-60 over 256 units (synthetic frames), and the receptive-field
masks + JPEGs of all 256 x 60 top images, for the demo-preset CaffeNet-BN on this machine's CPU."""
from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.units.activations import RunningTopK, darken_outside, layer_geometry, receptive_field_masks  # noqa: E402
from model.network.caffenet import CaffeNetBN, normalize_images  # noqa: E402
from model.settings import TRAIN_PRESETS, UNITS  # noqa: E402
from report import write_section

PRESET = TRAIN_PRESETS["demo"]
FRAMES, BATCH, REPEATS = 1024, 128, 3


def pool_throughput(model: CaffeNetBN) -> float:
    """Images/s through conv5 and the running top-k (decoding excluded: frames are synthetic)."""
    frames = torch.randint(0, 256, (BATCH, 3, PRESET.crop_size, PRESET.crop_size), dtype=torch.uint8)
    top = RunningTopK(UNITS.top)
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, FRAMES, BATCH):
            maps = model.forward_features(normalize_images(frames), UNITS.layer)
            ids = torch.arange(first, first + BATCH)
            top.update(maps, ids, ids // 10)
    top.result()
    return FRAMES / (time.perf_counter() - start)


def mask_seconds(model: CaffeNetBN) -> float:
    """Seconds for masks, darkening and JPEG encoding of 256 units x 60 images."""
    geometry = layer_geometry(model, UNITS.layer)
    side = model.forward_features(torch.zeros(1, 3, PRESET.crop_size, PRESET.crop_size), UNITS.layer).shape[-1]
    maps = torch.rand(256, UNITS.top, side, side)
    crops = torch.randint(0, 256, (UNITS.top, 3, PRESET.crop_size, PRESET.crop_size), dtype=torch.uint8)
    radius = UNITS.empirical_rf_fraction * geometry.rf_size / 2
    start = time.perf_counter()
    for first in range(0, 256, 8):
        masks = receptive_field_masks(maps[first:first + 8].flatten(0, 1), geometry, PRESET.crop_size, radius)
        for image in darken_outside(crops.repeat(8, 1, 1, 1), masks, UNITS.darken):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(io.BytesIO(), format="JPEG",
                                                                 quality=UNITS.jpeg_quality)
    return time.perf_counter() - start


def main() -> None:
    model = CaffeNetBN(16, input_size=PRESET.crop_size, fc_width=PRESET.fc_width).eval()
    load = os.getloadavg()[0]
    throughput = statistics.median(pool_throughput(model) for _ in range(REPEATS))
    masks = statistics.median(mask_seconds(model) for _ in range(REPEATS))
    print(f"pool: {throughput:.0f} images/s; masks for 256 x {UNITS.top}: {masks:.1f} s")
    write_section("Units", f"""\
`benchmarks/bench_units.py`: demo-preset CaffeNet-BN ({PRESET.crop_size} px crops), fp32 on CPU,
median of {REPEATS} repeats. Pool = conv5 forward + running top-{UNITS.top} over 256 units on
{FRAMES} synthetic frames (JPEG decoding excluded); masks = receptive-field circles, darkening and JPEG
encoding of all 256 x {UNITS.top} top images.

| pool images/s | masks for 256 x {UNITS.top} images, s |
|---|---|
| {throughput:.0f} | {masks:.1f} |

GPU figures: see Units (GPU).
Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f} at the start; {date.today()}.
""")


if __name__ == "__main__":
    main()
