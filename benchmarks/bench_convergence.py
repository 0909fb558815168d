"""Do the same detectors recur? (issue 38, item 3) `ambient compare` on the runs `make science` keeps, per world seed.

For each world seed folder of a `bench_science.py --out DIR` (seed<S>/ with data/, sound/, untrained/, scene/), a
second sound network is trained on the same data with another training seed (`train --seed SECOND_SEED`, then
`units --split all`, `dissect --truth`, kept in seed<S>/sound_seed<N>/), and the sound network is compared with it
and with the controls: every conv5 unit of the sound network matched to one unit of B by optimal assignment on the
Pearson r of their spatial maxima over the same pool (model/units/compare.py). A detector "recurs" when its match
detects the same category with r >= MATCH_R. One row per seed and B, and the spread over seeds.

    .venv/bin/python benchmarks/bench_convergence.py --out DIR [--seeds 0 1] [--second-seed 1] [--second-on 0] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from model.settings import DETECTOR_PRECISION  # noqa: E402
from bench_science import PRESET, ambient  # noqa: E402  (one way to run a kept CLI stage)
from report import write_section  # noqa: E402


def second_sound_run(work: Path, second_seed: int) -> Path:
    """The sound network again on the same data and labels, another training seed; units and dissection kept."""
    data, run = work / "data", work / f"sound_seed{second_seed}"
    log = work / "log_convergence.txt"
    ambient(log, "train", str(data), "--labels", "cluster", "--out", str(run), "--preset", PRESET,
            "--seed", str(second_seed), done=run / "model.pt")
    ambient(log, "units", str(run), "--pool", str(data), "--split", "all", "--no-publish",
            done=run / "units_conv5.npz")
    ambient(log, "dissect", str(run), "--truth", "--no-publish", done=run / "dissection.json")
    return run


def row(seed: int, name: str, sound: Path, other: Path) -> dict:
    from model.network.run import RunFolder
    from model.units.compare import compare_runs

    result = compare_runs(sound, other)
    summary = result["summary"]
    detectors_b = [u for u in RunFolder(other).dissection or []
                   if u.get("category") and float(u["precision"]) >= DETECTOR_PRECISION]
    return {"seed": seed, "b": name, "median_r": result["median_r"],
            "matched": sum(u["r"] >= result["match_r"] for u in result["units"]), "units": len(result["units"]),
            "detectors_a": summary["detectors_a"], "detectors_b": len(detectors_b),
            "recurring": summary["recurring"], "categories": summary["categories"]}


def share(r: dict) -> float:
    return r["recurring"] / r["detectors_a"] if r["detectors_a"] else float("nan")


def capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def report(rows: list[dict], second_seed: int, match_r: float) -> str:
    lines = ["| world seed | B | median matched r | units matched at r >= 0.5 | B's detectors | "
             "sound's detectors that recur in B |", "|---|---|---|---|---|---|"]
    for r in rows:
        by_category = ", ".join(f"{c} {v['recurring']} of {v['detectors']}" for c, v in r["categories"].items()
                                if v["recurring"])
        lines.append(f"| {r['seed']} | {r['b']} | {r['median_r']:.3f} | {r['matched']} of {r['units']} | "
                     f"{r['detectors_b']} | {r['recurring']} of {r['detectors_a']} ({share(r):.0%})"
                     f"{f': {by_category}' if by_category else ''} |")
    spreads = []
    for name in dict.fromkeys(r["b"] for r in rows):
        mine = [r for r in rows if r["b"] == name]
        medians = [r["median_r"] for r in mine]
        shares = [share(r) for r in mine]
        spreads.append(f"{name}: median matched r {statistics.median(medians):.2f} ({min(medians):.2f}-"
                       f"{max(medians):.2f}), detectors recurring {statistics.median(shares):.0%} "
                       f"({min(shares):.0%}-{max(shares):.0%})")
    return f"""\
`benchmarks/bench_convergence.py --out DIR` on the runs `make science` kept (`bench_science.py --out DIR`): per world
seed, the sound network (training seed of the demo preset) against the same network trained again with
`--seed {second_seed}` on the same data, the untrained network and the scene-trained control. Matching: optimal
assignment on the Pearson r of the units' spatial maxima over the seed's whole pool (`ambient compare`); a detector
(precision >= {DETECTOR_PRECISION:.0%}) recurs when its match detects the same category with r >= {match_r}.
Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch kernels {capability()},
{datetime.date.today().isoformat()}; load average {os.getloadavg()[0]:.1f} at the end.

{chr(10).join(lines)}

Median (range) over world seeds {', '.join(str(s) for s in dict.fromkeys(r['seed'] for r in rows))}: {'; '.join(spreads)}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="bench_science.py's --out folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--second-seed", type=int, default=1, help="training seed of the second sound network")
    parser.add_argument("--second-on", type=int, nargs="*", default=None,
                        help="world seeds that get the second sound network (default: all of --seeds)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    from model.units.compare import MATCH_R

    rows = []
    for seed in args.seeds:
        work = args.out / f"seed{seed}"
        missing = [name for name in ("sound", "untrained", "scene") if not (work / name / "dissection.json").exists()]
        if missing:
            parser.error(f"{work}: no dissected {', '.join(missing)} run (run bench_science.py --out {args.out} first)")
        print(f"== world seed {seed}", flush=True)
        others = [("untrained", work / "untrained"), ("scene-trained", work / "scene")]
        if args.second_on is None or seed in args.second_on:
            others.insert(0, (f"sound, training seed {args.second_seed}", second_sound_run(work, args.second_seed)))
        for name, other in others:
            rows.append(row(seed, name, work / "sound", other))
            print(f"  {name}: median r {rows[-1]['median_r']:.3f}, {rows[-1]['recurring']} of "
                  f"{rows[-1]['detectors_a']} detectors recur", flush=True)
    text = report(rows, args.second_seed, MATCH_R)
    print(text)
    if not args.no_write:
        write_section("Explorer: convergence over world seeds", text)


if __name__ == "__main__":
    main()
