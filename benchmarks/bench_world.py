"""Demo-world generation speed: seconds and videos/s per preset, procedural vs tuxpaint objects."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.settings import WORLD, WORLD_PRESETS  # noqa: E402
from model.world import generate_world, tuxpaint  # noqa: E402
from report import write_section

# preset -> (repeats, videos generated): demo takes a minute or more (one run); large (5,000 videos)
# would take most of an hour here, so a 200-video sample of it is timed and the whole projected.
RUNS = {"tiny": (3, None), "demo": (1, None), "large": (1, 200)}


def main() -> None:
    load = os.getloadavg()[0]   # the cores are shared: a busy machine slows every figure
    modes = ["procedural"] + (["tuxpaint"] if tuxpaint.available() else [])
    rows = []
    for mode in modes:
        for preset, (repeats, sample) in RUNS.items():
            seconds = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    summary = generate_world(tmp, videos=sample, preset=preset, seed=0, objects=mode,
                                             progress=False)
                seconds.append(summary.seconds)
            videos = sample or WORLD_PRESETS[preset].videos
            rate = videos / statistics.median(seconds)
            total = WORLD_PRESETS[preset].videos / rate
            measured = f"{total:.1f}" if sample is None else f"{total:.0f} (projected from {sample} videos)"
            print(f"world {preset} ({mode}): {measured} s, {rate:.2f} videos/s "
                  f"(runs: {', '.join(f'{s:.1f}' for s in seconds)} s)")
            rows.append(f"| {preset} | {mode} | {WORLD_PRESETS[preset].videos} x {WORLD_PRESETS[preset].duration_s:g} s "
                        f"| {measured} | {rate:.2f} | {repeats} |")
    missing = "" if "tuxpaint" in modes else "\ntuxpaint-stamps-default is not installed here: procedural only.\n"
    write_section("Demo world", f"""\
`benchmarks/bench_world.py`: `generate_world` (`ambient world`) with {WORLD.workers} worker processes,
{WORLD.width}x{WORLD.height} H.264 at {WORLD.fps} fps + AAC {WORLD.sample_rate} Hz, truth masks; median of the runs.

| preset | objects | videos | seconds | videos/s | runs |
|---|---|---|---|---|---|
{chr(10).join(rows)}
{missing}
Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
load average {load:.1f} at the start; {datetime.date.today().isoformat()}.
""")


if __name__ == "__main__":
    main()
