"""Ingest speed: videos/s and frames/s for 20 generated 10 s 320x240 videos with 2 workers (median of 3);
then one 10-minute 720p video against one of 10 seconds (10 frames each): ingest seeks, so the long
one must take at most 3x as long. `--long-only` runs only the second part."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.data.ingest import ingest, ingest_video  # noqa: E402
from model.data.media import write_video  # noqa: E402
from model.settings import MEDIA_LIMITS  # noqa: E402
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


LONG_SECONDS, SHORT_SECONDS, HD_FPS, LONG_REPEATS = 600.0, 10.0, 30, 3


def make_hd_video(path: Path, seconds: float) -> None:
    """1280x720 H.264 at 30 fps (x264's default keyframe interval, 250 frames) + AAC: a panning
    gradient, so frames compress like footage; ultrafast only to keep generating 10 minutes short."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:720, :1280 + 600]
    canvas = np.stack([(x // 3) % 256, (y // 2) % 256, (x + y) // 7 % 256], axis=-1).astype(np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=HD_FPS, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 1280, 720, "yuv420p"
        audio = container.add_stream("aac", rate=RATE, layout="mono")
        for i in range(int(seconds * HD_FPS)):
            shift = i % 600
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas[:, shift:shift + 1280]), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        samples = int(seconds * RATE)
        envelope = 1 + np.sin(2 * np.pi * 0.3 * np.arange(samples) / RATE)
        wave = av.AudioFrame.from_ndarray((0.1 * envelope * rng.standard_normal(samples)).astype(np.float32)[None],
                                          format="flt", layout="mono")
        wave.sample_rate, wave.pts = RATE, 0
        for packet in [*audio.encode(wave), *audio.encode(None)]:
            container.mux(packet)


def long_video(load: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        make_hd_video(folder / "long.mp4", LONG_SECONDS)
        make_hd_video(folder / "short.mp4", SHORT_SECONDS)
        generated = time.perf_counter() - start
        seconds = {"short.mp4": [], "long.mp4": []}
        for repeat in range(LONG_REPEATS):         # alternating, so a change in load hits both
            for name in seconds:
                start = time.perf_counter()
                frames, _ = ingest_video(folder, name, folder / f"data_{repeat}")
                seconds[name].append(time.perf_counter() - start)
                assert frames == 10
        sizes = {name: (folder / name).stat().st_size / 2**20 for name in seconds}
    short, long = (statistics.median(seconds[name]) for name in ("short.mp4", "long.mp4"))
    print(f"long video: 10 s {short:.2f} s, 10 min {long:.2f} s, ratio {long / short:.2f} "
          f"(runs {seconds}; generating took {generated:.0f} s)")
    write_section("Ingest (long videos)", f"""\
`benchmarks/bench_ingest.py`: `model.data.ingest.ingest_video` (one process: probe, stream spans, 10 clips,
10 frames, textures, JPEGs and mp3 clips) on one generated 1280x720 H.264 (30 fps, keyframe every 250
frames) + AAC 22.05 kHz video of 10 minutes ({sizes["long.mp4"]:.0f} MiB) and one of 10 seconds
({sizes["short.mp4"]:.1f} MiB), 10 frames each, alternating, median of {LONG_REPEATS}.

| video | seconds to ingest |
|---|---|
| 10 s, 720p | {short:.2f} |
| 10 min, 720p | {long:.2f} |
| ratio (target <= 3) | {long / short:.2f} |

Ingest seeks to each frame's keyframe and each clip, and finds where each stream's data ends by
reading only the last {MEDIA_LIMITS.tail_seek_s:.0f} s before the end the header promises.
Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
load average {load:.1f} at the start (other work shares the cores); {datetime.date.today().isoformat()}.
""")


def main() -> None:
    load = os.getloadavg()[0]   # the cores are shared: a busy machine slows every figure
    if "--long-only" in sys.argv:
        long_video(load)
        return
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
    long_video(os.getloadavg()[0])


if __name__ == "__main__":
    main()
