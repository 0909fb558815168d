"""Sound texture synthesis (`model.sound.synthesis`) on real recordings, not the demo world's sounds.

Clips: Debian's lincity-ng-data ships ~4 s field recordings of city scenes (traffic, farms, water,
crowds, trains, building sites, ...; `make sounds` installs it). One recording per scene (the first
by name of Water1..Water5 and so on, so no scene counts five times), its first 3.75 s. For each clip:
its texture (the target), a synthesis from noise (seed 0, default steps, on the CPU), and the
per-group SNR of the synthesised texture against the target; a clip's figure is its worst group.

Same k-means cluster: k-means (model/sound/labels.py, k = 30, the weighted texture space the project's labels
use) fitted on the textures of every 3.75 s window (every 1.875 s) of every recording of lincity-ng-data
and of ufoai-sound's ambience loops (Debian's ufoai-sound, also installed by `make sounds`); a clip counts
when its synthesis lands in its target's cluster.

Calibration of the measure: two adjacent 3.75 s stretches of one recording (ufoai-sound's ambience
recordings of at least 7.5 s), and the clips above against each other (different recordings).

    python benchmarks/bench_synthesis.py [--clips N] [--steps S]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.sound.texture import sound_texture, sound_textures, texture_scale  # noqa: E402
from model.kmeans import cluster_labels  # noqa: E402
from model.data.media import probe, read_audio  # noqa: E402
from model.settings import TEXTURE  # noqa: E402
from model.sound.synthesis import STEPS, synthesize, texture_snr  # noqa: E402
from report import write_section  # noqa: E402

LINCITY_SOUNDS = Path("/usr/share/games/lincity-ng/sounds")
UFOAI_SOUNDS = Path("/usr/share/games/ufoai/base/0snd.pk3")
CLIP = TEXTURE.clip_seconds
K = 30


def durations(paths: list[Path]) -> dict[Path, float]:
    return {path: probe(path).duration for path in paths}


def one_per_scene(lengths: dict[Path, float]) -> list[Path]:
    """The first recording (by name) of each scene, scenes named by the file name without its number."""
    chosen: dict[str, Path] = {}
    for path in sorted(lengths):
        if lengths[path] >= CLIP:
            chosen.setdefault(re.sub(r"\d+$", "", path.stem), path)
    return list(chosen.values())


def ufoai_ambience(folder: Path) -> list[Path]:
    with zipfile.ZipFile(UFOAI_SOUNDS) as pack:
        names = [n for n in pack.namelist() if n.startswith("sound/ambience/") and n.endswith(".ogg")]
        pack.extractall(folder, names)
    return sorted(folder / n for n in names)


def window_textures(lengths: dict[Path, float]) -> np.ndarray:
    """Textures of every 3.75 s window, every 1.875 s, of every recording at least 3.75 s long."""
    textures = []
    for path, seconds in sorted(lengths.items()):
        starts = list(np.arange(0.0, seconds - CLIP + 1e-6, CLIP / 2))
        for start in starts:
            waveform, rate = read_audio(path, float(start), CLIP)
            if waveform.size >= int((CLIP - 0.01) * rate):
                textures.append(sound_textures(waveform[None, :int(CLIP * rate)], rate)[0])
    return np.stack(textures)


def nearest_cluster(texture: np.ndarray, centroids: np.ndarray) -> int:
    return int(np.argmin(((centroids - texture * texture_scale()) ** 2).sum(axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=None, help="only the first N scenes (default: all)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="starting noises per clip")
    args = parser.parse_args()
    for folder, package in ((LINCITY_SOUNDS, "lincity-ng-data"), (UFOAI_SOUNDS, "ufoai-sound")):
        if not folder.exists():
            sys.exit(f"{folder} is missing: install Debian's {package} (`make sounds`)")
    load_before = os.getloadavg()
    lincity = durations(sorted(LINCITY_SOUNDS.glob("*.wav")))
    clips = one_per_scene(lincity)[:args.clips]
    n_long = sum(seconds >= CLIP for seconds in lincity.values())
    print(f"{len(clips)} clips, one per scene, of {n_long} lincity-ng recordings of 3.75 s or more", flush=True)

    scratch = tempfile.TemporaryDirectory()
    ufoai = durations(ufoai_ambience(Path(scratch.name)))

    # k-means on every window of both packages' recordings.
    windows = window_textures({**lincity, **ufoai})
    weighted = (windows * texture_scale()).astype(np.float32)
    kmeans = cluster_labels(weighted, np.ones(len(weighted), bool), K, seed=0)
    print(f"k-means: {len(windows)} windows, k = {K}", flush=True)

    rows, targets = [], []
    for path in clips:
        waveform, rate = read_audio(path, 0.0, CLIP)
        target = sound_texture(waveform[:int(CLIP * rate)], rate)
        targets.append(target)
        for seed in args.seeds:
            wall, cpu = time.perf_counter(), time.process_time()
            synthesised = synthesize(target, CLIP, seed=seed, steps=args.steps)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            texture = sound_texture(synthesised, TEXTURE.sample_rate)
            snr = texture_snr(target, texture)
            same = nearest_cluster(target, kmeans.centroids) == nearest_cluster(texture, kmeans.centroids)
            rows.append(dict(name=path.name, seed=seed, snr=snr, same=same, wall=wall, cpu=cpu))
            print(f"{path.name:<22} seed {seed} worst {snr['worst']:5.1f} dB  moments {snr['moments']:5.1f}  "
                  f"correlations {snr['correlations']:5.1f}  modulation {snr['modulation']:5.1f}  "
                  f"same cluster {same}  {wall:.1f} s ({cpu:.1f} CPU-s)", flush=True)
    load_after = os.getloadavg()

    # Calibration: adjacent stretches of one recording; different recordings.
    same_recording = []
    for path, seconds in sorted(ufoai.items()):
        if seconds >= 2 * CLIP:
            first, rate = read_audio(path, 0.0, CLIP)
            second, _ = read_audio(path, CLIP, CLIP)
            n = int(CLIP * rate)
            if first.size >= n and second.size >= n:
                same_recording.append(texture_snr(sound_texture(first[:n], rate), sound_texture(second[:n], rate)))
    different = [texture_snr(a, b) for i, a in enumerate(targets) for j, b in enumerate(targets) if i != j]

    gpu = "not measured: no GPU on this machine"
    if torch.cuda.is_available():
        synthesize(targets[0], CLIP, steps=2, device="cuda")                      # warm-up
        times = []
        for target in targets[:5]:
            start = time.perf_counter()
            synthesize(target, CLIP, seed=0, steps=args.steps, device="cuda")
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        gpu = f"{statistics.median(times):.1f} s median over {len(times)} clips ({torch.cuda.get_device_name()})"
    write_section("Sound texture synthesis", report(rows, same_recording, different, len(windows), n_long,
                                                     load_before, load_after, gpu, args.steps, args.seeds))
    print("wrote BENCHMARKS.md section 'Sound texture synthesis'")


def _median(values) -> float:
    return statistics.median(values)


def report(rows, same_recording, different, n_windows, n_recordings, load_before, load_after, gpu, steps,
           seeds) -> str:
    first = [r for r in rows if r["seed"] == seeds[0]]
    worst = [r["snr"]["worst"] for r in first]
    by_clip = {}
    for r in rows:
        by_clip.setdefault(r["name"], []).append(r["snr"]["worst"])
    seed_spread = [max(v) - min(v) for v in by_clip.values()]
    groups = ("moments", "correlations", "modulation")
    lines = [
        f"{datetime.date.today()}. Machine: {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores shared with other work: load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after. `python benchmarks/bench_synthesis.py` (needs `make sounds`).",
        "",
        f"{len(first)} real recordings (Debian's lincity-ng-data: one per scene of its {n_recordings} recordings of "
        f"3.75 s or more, the first 3.75 s), each synthesised from noise (seeds {', '.join(map(str, seeds))}; "
        f"{steps} M&S steps; CPU). "
        "SNR per group = 10 log10(sum t^2 / sum (t - t_hat)^2) of the synthesised texture against the clip's; "
        "a clip's figure is its worst group (loudness is matched by a gain, so it is never the worst).",
        "",
        f"- **Worst-group SNR (seed {seeds[0]}): median {_median(worst):.1f} dB, worst {min(worst):.1f} dB, best "
        f"{max(worst):.1f} dB** (target: median >= 20 dB); {sum(w >= 20 for w in worst)} of {len(first)} clips "
        ">= 20 dB.",
        "- Other seeds: " + "; ".join(
            f"seed {seed}: median {_median([r['snr']['worst'] for r in rows if r['seed'] == seed]):.1f} dB, worst "
            f"{min(r['snr']['worst'] for r in rows if r['seed'] == seed):.1f} dB" for seed in seeds[1:])
        + f". A clip's worst-group SNR differs between seeds by a median {_median(seed_spread):.1f} dB "
        f"(at most {max(seed_spread):.1f} dB).",
        "- Median per group (all runs): "
        + ", ".join(f"{g} {_median([r['snr'][g] for r in rows]):.1f} dB" for g in groups) + ".",
        f"- **Same k-means cluster as the target: {sum(r['same'] for r in rows)} of {len(rows)} runs "
        f"({100 * np.mean([r['same'] for r in rows]):.0f}%)** (target >= 90%); k-means (model/sound/labels.py, k = {K}, "
        f"the labels' weighted texture space) fitted on {n_windows} windows of 3.75 s (every 1.875 s) of every "
        "recording of lincity-ng-data and ufoai-sound's ambience loops.",
        f"- **Time per 3.75 s clip on the CPU (all runs): median {_median([r['wall'] for r in rows]):.1f} s wall "
        f"(range {min(r['wall'] for r in rows):.1f}-{max(r['wall'] for r in rows):.1f} s), median "
        f"{_median([r['cpu'] for r in rows]):.1f} CPU-s** (one thread; the wall time is what the other work on the "
        "shared cores left it). Goal: < 60 s on 2 cores.",
        f"- On a GPU: {gpu}.",
        "",
        "Calibration of the measure (worst group, median and range):",
        f"- two adjacent 3.75 s stretches of one recording ({len(same_recording)} ufoai-sound ambience recordings "
        f"of 7.5 s or more): median {_median([s['worst'] for s in same_recording]):.1f} dB "
        f"({min(s['worst'] for s in same_recording):.1f} to {max(s['worst'] for s in same_recording):.1f}); "
        "per group " + ", ".join(f"{g} {_median([s[g] for s in same_recording]):.1f}" for g in groups) + ".",
        f"- different recordings (the {len(first)} clips against each other, {len(different)} ordered pairs): median "
        f"{_median([s['worst'] for s in different]):.1f} dB ({min(s['worst'] for s in different):.1f} to "
        f"{max(s['worst'] for s in different):.1f}); per group "
        + ", ".join(f"{g} {_median([s[g] for s in different]):.1f}" for g in groups) + ".",
        "",
        f"Per clip, seed {seeds[0]}, worst first:",
        "",
        "| clip | worst | moments | correlations | modulation | same cluster | wall s | CPU-s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(first, key=lambda r: r["snr"]["worst"]):
        s = r["snr"]
        lines.append(f"| {r['name']} | {s['worst']:.1f} | {s['moments']:.1f} | {s['correlations']:.1f} | "
                     f"{s['modulation']:.1f} | {'yes' if r['same'] else 'no'} | {r['wall']:.1f} | {r['cpu']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
