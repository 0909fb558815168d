"""Ingest speed: videos/s and frames/s for 20 generated 10 s 320x240 videos with 2 workers (median of 3)."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.ingest import ingest  # noqa: E402
from model.media import write_video  # noqa: E402
from report import write_section

VIDEOS, SECONDS, FPS, RATE, WORKERS, REPEATS = 20, 10.0, 10, 22_050, 2, 3


def make_videos(folder: Path) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:240, :320]
    for i in range(VIDEOS):
        # Drifting colour gradients: compress like real footage, unlike pixel noise.
        frames = np.stack([np.stack([(x + 3 * t + 10 * i) % 256, (2 * y + t) % 256, np.full_like(x, 12 * i % 256)],
                                    axis=-1) for t in range(int(SECONDS * FPS))]).astype(np.uint8)
        envelope = 1 + np.sin(2 * np.pi * rng.uniform(0.5, 8) * np.arange(int(SECONDS * RATE)) / RATE)
        noise = (0.1 * envelope * rng.standard_normal(envelope.size)).astype(np.float32)
        write_video(folder / f"video_{i:02d}.mp4", frames, FPS, noise, RATE)


def main() -> None:
    load = os.getloadavg()[0]   # the cores are shared: a busy machine slows every figure
    with tempfile.TemporaryDirectory() as tmp:
        videos = Path(tmp) / "videos"
        videos.mkdir()
        make_videos(videos)
        seconds = []
        for repeat in range(REPEATS):
            start = time.perf_counter()
            report = ingest(videos, Path(tmp) / f"data_{repeat}", workers=WORKERS, progress=False)
            seconds.append(time.perf_counter() - start)
            assert len(report.ingested) == VIDEOS, report.skipped
    median = statistics.median(seconds)
    videos_per_s, frames_per_s = VIDEOS / median, report.frames / median
    print(f"ingest: {videos_per_s:.2f} videos/s, {frames_per_s:.1f} frames/s "
          f"(median of {REPEATS}: {', '.join(f'{s:.2f}' for s in seconds)} s)")
    write_section("Ingest", f"""\
`benchmarks/bench_ingest.py`: {VIDEOS} generated videos, {SECONDS:.0f} s each, 320x240 H.264 + AAC
22.05 kHz, {report.frames // VIDEOS} frames per video (JPEG, mp3 clip, texture, spectrum), `--workers {WORKERS}`,
median of {REPEATS} fresh runs.

| videos/s | frames/s | seconds per run |
|---|---|---|
| {videos_per_s:.2f} | {frames_per_s:.1f} | {median:.2f} |

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
load average {load:.1f} at the start; {datetime.date.today().isoformat()}.
""")


if __name__ == "__main__":
    main()
