"""Sound-texture speed: clips/s of 3.75 s at 22.05 kHz, batched `sound_textures` vs a plain
one-clip-at-a-time scipy pipeline in the same process (median of 5 repeats); with a GPU, also the
torch implementation (`clip_features(..., torch_device="cuda")`, what `ambient ingest --device cuda` uses)."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.sound.texture import clip_features, cochlear_filters, sound_textures, textures_from_cochleagrams  # noqa: E402
from model.settings import TEXTURE  # noqa: E402
from report import write_section

RATE, BATCHED_CLIPS, PLAIN_CLIPS, GPU_CLIPS, REPEATS = 22_050, 128, 12, 4096, 5


def plain_scipy_texture(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """The textbook route, one clip at a time: resample, filter, scipy.signal.hilbert, resample."""
    common = np.gcd(sample_rate, TEXTURE.sample_rate)
    signal = scipy.signal.resample_poly(waveform, TEXTURE.sample_rate // common, sample_rate // common)
    subbands = scipy.fft.irfft(scipy.fft.rfft(signal) * cochlear_filters(signal.size), n=signal.size)
    envelopes = np.abs(scipy.signal.hilbert(subbands)) ** TEXTURE.compression
    envelopes = scipy.signal.resample_poly(envelopes, 1, TEXTURE.sample_rate // TEXTURE.envelope_rate, axis=-1)
    return textures_from_cochleagrams(np.maximum(envelopes, 0)[None])[0]


def clips_per_second(run, n_clips: int) -> tuple[float, float]:
    """(median wall-clock clips/s, median CPU ms per clip) over REPEATS runs."""
    walls, cpus = [], []
    for _ in range(REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return n_clips / statistics.median(walls), 1000 * statistics.median(cpus) / n_clips


def main() -> None:
    load = os.getloadavg()[0]   # the cores are shared: a busy machine slows every figure
    rng = np.random.default_rng(0)
    n = int(TEXTURE.clip_seconds * RATE)
    t = np.arange(n) / RATE
    # Noise under slow random amplitude modulation, like wind or a crowd.
    clips = np.stack([0.1 * (1 + np.sin(2 * np.pi * rng.uniform(0.5, 8) * t)) * rng.standard_normal(n)
                      for _ in range(BATCHED_CLIPS)]).astype(np.float32)
    sound_textures(clips[:8], RATE)                  # warm the filter caches

    batched, batched_cpu = clips_per_second(lambda: sound_textures(clips, RATE), BATCHED_CLIPS)
    plain, plain_cpu = clips_per_second(lambda: [plain_scipy_texture(c, RATE) for c in clips[:PLAIN_CLIPS]],
                                        PLAIN_CLIPS)
    gpu_row = "| torch on a GPU (`--device cuda`) | not measured: no GPU on this machine | |"
    import torch

    if torch.cuda.is_available():
        many = np.concatenate([clips] * (GPU_CLIPS // BATCHED_CLIPS))
        clip_features(many[:256], RATE, torch_device="cuda")          # warm up: CUDA context, FFT plans
        on_gpu, _ = clips_per_second(lambda: (clip_features(many, RATE, torch_device="cuda"),
                                              torch.cuda.synchronize()), GPU_CLIPS)
        gpu_row = f"| torch on {torch.cuda.get_device_name()} (`--device cuda`), {GPU_CLIPS} clips | {on_gpu:.0f} | |"
    print(f"sound textures: batched {batched:.1f} clips/s ({batched_cpu:.1f} CPU ms/clip), "
          f"plain scipy one at a time {plain:.1f} clips/s ({plain_cpu:.1f} CPU ms/clip), "
          f"load {load:.1f}; {gpu_row}")
    write_section("Sound textures", f"""\
`benchmarks/bench_texture.py`: 502-d textures of 3.75 s clips at 22.05 kHz (amplitude-modulated noise),
median of {REPEATS} repeats in one process. Batched = `model.sound.texture.sound_textures` on {BATCHED_CLIPS} clips;
plain = resample_poly, FFT filtering, `scipy.signal.hilbert`, resample_poly, one clip at a time.

| method | clips/s | CPU ms per clip |
|---|---|---|
| batched `sound_textures` | {batched:.1f} | {batched_cpu:.1f} |
| plain scipy, one clip at a time | {plain:.1f} | {plain_cpu:.1f} |
{gpu_row}

Batched at {batched_cpu:.1f} CPU ms per clip is about {os.cpu_count() * 1000 / batched_cpu:.0f} clips/s on {os.cpu_count()} idle cores
(target: >= 100); the wall-clock figures share the cores with whatever else runs (load average below).
Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
load average {load:.1f} at the start; {datetime.date.today().isoformat()}.
""")


if __name__ == "__main__":
    main()
