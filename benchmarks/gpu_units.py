"""GPU unit extraction: conv5 top-60 over a pool of stored JPEGs (decoding included), then the masks.

Times the project's own code paths on a randomly initialised paper-size CaffeNet-BN (227 px centre crops
of 256 px frames) in eval mode, channels_last on CUDA:

- model only: ``Network.activations`` (normalise, conv5 forward in bf16 autocast) + ``RunningTopK.update``
  on random uint8 crops already on the device (comparable with the issue's ~51,000 images/s on one H100);
- pool: ``model.units.top_images.top_images`` over N generated 256x256 JPEGs (default 200,000), each read from disk and
  decoded by ``model.data.frames.stream_frames`` (``torchvision.io.decode_jpeg``, nvJPEG on a GPU);
- masks: ``model.units.top_images.masked_units`` for all 256 units x 60 top images (decode the top frames,
  receptive-field masks, darkening, JPEG encoding).

Targets (the issue): the 200,000-frame pool in < 60 s on one H100, the masks in < 10 s more. On a GPU the
figures go to BENCHMARKS.md under "Units (GPU)".

    python benchmarks/gpu_units.py                  # on a CUDA machine
    python benchmarks/gpu_units.py --small          # tiny sizes, runs anywhere (checks the script works)
    python benchmarks/gpu_units.py --frames 50000   # a smaller pool
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torchvision.io import decode_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.units.activations import RunningTopK, TopImages, layer_geometry  # noqa: E402
from model.network.caffenet import CaffeNetBN  # noqa: E402
from model.settings import TRAIN_PRESETS, UNITS  # noqa: E402
from model.units.top_images import Network, masked_units, pool_records, top_images  # noqa: E402
from gpu_train import CLASSES, make_dataset  # noqa: E402
from report import BENCHMARKS, write_section  # noqa: E402

POOL_TARGET_S, POOL_TARGET_FRAMES, MASKS_TARGET_S, ISSUE_MODEL_RATE = 60, 200_000, 10, 51_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_network(preset, device: torch.device) -> Network:
    """A random CaffeNet-BN cut at conv5, as ``model.units.top_images.load_network`` builds one for a trained run."""
    torch.manual_seed(0)
    model = CaffeNetBN(CLASSES, input_size=preset.crop_size, fc_width=preset.fc_width).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return Network(model, UNITS.layer, "caffenet-bn", "cluster", preset.frame_size, preset.crop_size)


def model_only(network: Network, settings, device: torch.device, steps: int) -> float:
    """Images/s of conv5 (bf16 autocast on CUDA) + the running top-k on random crops already on the device."""
    size = network.input_size
    crops = torch.randint(0, 256, (settings.batch_size, 3, size, size), dtype=torch.uint8, device=device)
    running = RunningTopK(settings.top)

    def step(first: int) -> None:
        ids = torch.arange(first, first + settings.batch_size)
        running.update(network.activations(crops), ids, ids // 10)

    for i in range(max(2, steps // 10)):   # cuDNN and allocator warm-up outside the timing
        step(i * settings.batch_size)
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i * settings.batch_size)
    running.result()                        # to the CPU: waits for the device
    return steps * settings.batch_size / (time.perf_counter() - start)


def check_top(top: TopImages, frames: int, k: int) -> None:
    units = top.scores.shape[0]
    assert units == 256, f"conv5 has {units} units, expected 256"
    assert tuple(top.frame_ids.shape) == (256, k), tuple(top.frame_ids.shape)
    assert bool(((top.frame_ids >= 0) & (top.frame_ids < frames)).all()), "invalid frame ids in the top images"
    assert bool(torch.isfinite(top.scores).all()), "unfilled top-image slots"
    assert bool((top.scores[:, :-1] >= top.scores[:, 1:]).all()), "top images not in decreasing order"
    assert all(len(set(row)) == k for row in top.frame_ids.tolist()), "a frame appears twice in a unit's top"


def check_masks(units: list, top: TopImages, crop: int) -> None:
    assert [unit for unit, _ in units] == list(range(256)), "masked_units did not yield units 0..255 in order"
    for unit, images in units:
        assert [row for row, _, _ in images] == top.frame_ids[unit].tolist(), f"unit {unit}: wrong frames"
        assert all(jpeg[:2] == b"\xff\xd8" for _, _, jpeg in images), f"unit {unit}: not JPEG bytes"
    first = decode_jpeg(torch.frombuffer(bytearray(units[0][1][0][2]), dtype=torch.uint8))
    assert tuple(first.shape) == (3, crop, crop), tuple(first.shape)


def cpu_agreement(network: Network, root: Path, records, settings, top_device: TopImages) -> float:
    """Share of units whose best frame in ``records`` is the same with fp32 + libjpeg on the CPU."""
    cpu = replace(network, module=copy.deepcopy(network.module).to("cpu", memory_format=torch.contiguous_format))
    top_cpu = top_images(cpu, root, records, settings, device="cpu")
    return float((top_cpu.frame_ids[:, 0] == top_device.frame_ids[:, 0]).float().mean())


def gpu_section(card: str, preset, settings, frames: int, model_rate: float, pool_s: float, masks_s: float,
                peak_gib: float, agreement: float) -> str:
    """The "Units (GPU)" section of BENCHMARKS.md for one run."""
    pool_rate, masks_rate = frames / pool_s, 256 * settings.top / masks_s
    verdict = (f"pool {'meets' if frames >= POOL_TARGET_FRAMES and pool_s < POOL_TARGET_S else 'misses'} "
               f"its target (< {POOL_TARGET_S} s for {POOL_TARGET_FRAMES:,}), the masks "
               f"{'meet' if masks_s < MASKS_TARGET_S else 'miss'} theirs (< {MASKS_TARGET_S} s)")
    return f"""\
`benchmarks/gpu_units.py`: randomly initialised paper-size CaffeNet-BN ({preset.crop_size} px centre crops of
{preset.frame_size} px frames) in eval mode, channels_last, bf16 autocast, batch {settings.batch_size}, conv5
top-{settings.top} over 256 units. Card: {card}; {os.cpu_count()} CPU cores; torch {torch.__version__};
{datetime.date.today().isoformat()}. The pool's JPEGs (256x256, quality 90) were just written: page cache.

| measure | seconds | images/s |
|---|---|---|
| model only: `Network.activations` + `RunningTopK.update`, random crops on the GPU | | {model_rate:,.0f} |
| pool: `top_images` over {frames:,} stored JPEGs (read, nvJPEG decode, crop, conv5, top-k) | {pool_s:.1f} | {pool_rate:,.0f} |
| masks: `masked_units` for 256 x {settings.top} top images (decode, masks, darken, JPEG) | {masks_s:.1f} | {masks_rate:,.0f} |

Targets (the issue): {POOL_TARGET_FRAMES:,} frames with decoding in < {POOL_TARGET_S} s on one H100, masks
< {MASKS_TARGET_S} s more; the issue measured ~{ISSUE_MODEL_RATE:,} images/s model only. Here the {verdict};
the pool runs at {pool_rate / model_rate:.0%} of model only. Peak GPU memory {peak_gib:.1f} GiB. On 512 frames,
the best frame of {agreement:.0%} of units is the same as on the CPU (fp32, libjpeg).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes on any device, to check the script")
    parser.add_argument("--frames", type=int, default=None, help=f"JPEGs in the pool (default {POOL_TARGET_FRAMES:,})")
    parser.add_argument("--batch", type=int, default=UNITS.batch_size, help="frames per forward pass")
    parser.add_argument("--steps", type=int, default=400, help="timed model-only batches")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset, settings = TRAIN_PRESETS["paper"], replace(UNITS, batch_size=args.batch)
    frames, steps = args.frames or POOL_TARGET_FRAMES, args.steps
    if args.small:   # tiny crops and 8 top images: seconds on a loaded 2-core CPU
        preset, settings = TRAIN_PRESETS["tiny"], replace(UNITS, batch_size=32, top=8)
        frames, steps = args.frames or 256, 3
    network = build_network(preset, device)
    geometry = layer_geometry(network.module, network.layer)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
    print(f"{card}: CaffeNet-BN {preset.crop_size} px crops of {preset.frame_size} px frames, "
          f"batch {settings.batch_size}, top {settings.top}, {frames:,} frames, {os.cpu_count()} cores, "
          f"torch {torch.__version__}", flush=True)

    model_rate = model_only(network, settings, device, steps)
    print(f"model only (synthetic crops on the device): {model_rate:,.0f} images/s "
          f"(the issue: ~{ISSUE_MODEL_RATE:,} on one H100, bf16)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_dataset(root, frames, os.cpu_count() or 1)
        print(f"generated {frames:,} JPEGs + manifest in {time.perf_counter() - start:.1f} s", flush=True)
        records = pool_records(root, "all")
        by_row = {r.frame_id: r for r in records}

        # Warm-up outside the timing: CUDA context, nvJPEG decoder, cuDNN, the masks' kernels.
        warm = top_images(network, root, records[:4 * settings.batch_size], settings, device=device)
        list(masked_units(network, geometry, TopImages(warm.scores[:8], warm.frame_ids[:8], warm.maps[:8]),
                          root, by_row, settings, device))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)

        start = time.perf_counter()
        top = top_images(network, root, records, settings, device=device)
        pool_s = time.perf_counter() - start
        check_top(top, frames, settings.top)
        pool_rate = frames / pool_s
        print(f"pool: {frames:,} JPEGs in {pool_s:.1f} s = {pool_rate:,.0f} images/s, decoding included "
              f"(target: {POOL_TARGET_FRAMES:,} in < {POOL_TARGET_S} s = "
              f"{POOL_TARGET_FRAMES / POOL_TARGET_S:,.0f} images/s); {pool_rate / model_rate:.0%} of model only",
              flush=True)

        start = time.perf_counter()
        units = list(masked_units(network, geometry, top, root, by_row, settings, device))
        masks_s = time.perf_counter() - start
        check_masks(units, top, preset.crop_size)
        mask_bytes = sum(len(jpeg) for _, images in units for _, _, jpeg in images)
        print(f"masks: 256 x {settings.top} masked JPEGs in {masks_s:.1f} s "
              f"({256 * settings.top / masks_s:,.0f} images/s, {mask_bytes / 2**20:.0f} MiB) "
              f"(target: 256 x 60 in < {MASKS_TARGET_S} s)", flush=True)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        if peak is not None:
            print(f"peak GPU memory (pool + masks): {peak:.1f} GiB")
        agreement = None
        if device.type == "cuda":
            agreement = cpu_agreement(network, root, records[:512], settings,
                                      top_images(network, root, records[:512], settings, device=device))
            print(f"check: on 512 frames the best frame of {agreement:.0%} of units is the same as on the CPU "
                  f"(fp32, libjpeg); bf16 and nvJPEG round differently, so near-ties may swap")
    print("checks passed: top images (256, {0}) with valid frame ids; 256 units x {0} masked JPEGs".format(
        settings.top))

    recorded = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    if device.type != "cuda" and "## Units (GPU)" not in recorded:
        write_section("Units (GPU)", f"""\
`benchmarks/gpu_units.py` (paper-size CaffeNet-BN, conv5 top-60 over 256 units with `model.units.top_images.top_images`
on {POOL_TARGET_FRAMES:,} stored JPEGs decoded on the GPU, then `model.units.top_images.masked_units` for all 256 x 60
top images): **still open**, no GPU was available ({datetime.date.today().isoformat()}). The script was
checked on the CPU with `--small`. Target: the {POOL_TARGET_FRAMES:,}-frame pool, decoding included, in
< {POOL_TARGET_S} s on one H100, masks < {MASKS_TARGET_S} s more (the issue measured ~{ISSUE_MODEL_RATE:,}
images/s model only, bf16, synthetic input).
""")
    if device.type == "cuda" and not args.small:
        write_section("Units (GPU)", gpu_section(card, preset, settings, frames, model_rate, pool_s, masks_s,
                                                 peak, agreement))


if __name__ == "__main__":
    main()
