"""Issue 38's checks on a real run: feature visualisations and two networks compared.

    .venv/bin/python benchmarks/bench_explore.py RUN_DIR [--units 32] [--steps 128] [--size 96]
        [--compare RUN_B ...]

1. Each visualisation excites its unit more than the unit's top pool image does: the ratio of the spatial
   maxima (the image's over RUN_DIR/units_conv5.npz's best), median over units, from
   RUN_DIR/visualizations/index.json (``ambient visualize RUN_DIR`` first).
2. Two seeds of the same unit agree more than two different units do: ``--units`` units (evenly spaced) are
   visualised again with seeds 1 and 2 (in memory, nothing written); the similarity of two images is the
   Pearson r of the layer's response to them (the 256 units' spatial maxima on each image), a similarity in
   what the network sees rather than in pixels, which jitter and rotation move. Same unit, seeds 1 and 2,
   against different units, seed 1 both.
3. With --compare: RUN_DIR's units matched to each other run's over their common pool (their units files' pool
   maxima, ``ambient units`` from this version on), as ``ambient compare`` does: median matched r, firing units
   at r >= MATCH_R, detectors that recur.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.network.run import RunFolder, read_visualizations  # noqa: E402
from model.settings import VISUALIZE  # noqa: E402
from model.units.compare import MATCH_R, compare_runs  # noqa: E402
from model.units.visualize import unit_maxima, visualize_units  # noqa: E402


def ratios(run_dir: Path) -> dict:
    entries = [e for e in read_visualizations(run_dir)["units"] if e["ratio"] is not None]
    values = np.array([e["ratio"] for e in entries])
    return {"units": len(values), "median_ratio": float(np.median(values)) if len(values) else None,
            "above_1": int((values > 1).sum())}


def seed_agreement(run_dir: Path, count: int, steps: int, size: int) -> dict:
    module, info = RunFolder(run_dir).network("cpu")
    module.requires_grad_(False)
    units = np.linspace(0, 255, count).round().astype(int).tolist()
    started = time.perf_counter()
    profiles = {}
    for seed in (1, 2):
        settings = replace(VISUALIZE, steps=steps, size=size, seed=seed)
        images = visualize_units(module, "conv5", units, info.mean, info.std, settings)
        profiles[seed] = unit_maxima(module, "conv5", images, info.mean, info.std).numpy()
    seconds = time.perf_counter() - started
    r = np.corrcoef(profiles[1], profiles[2])[:count, count:]          # seed 1 rows against seed 2 columns
    within = np.corrcoef(profiles[1])                                  # seed 1 against seed 1
    different = within[~np.eye(count, dtype=bool)]
    # The same, leaving out the visualised units themselves (each image excites its own unit by construction).
    def r_without(a: np.ndarray, b: np.ndarray, left_out: list[int]) -> float:
        keep = np.setdiff1d(np.arange(a.shape[0]), left_out)
        return float(np.corrcoef(a[keep], b[keep])[0, 1])
    same_without = [r_without(profiles[1][i], profiles[2][i], [units[i]]) for i in range(count)]
    different_without = [r_without(profiles[1][i], profiles[1][j], [units[i], units[j]])
                         for i in range(count) for j in range(count) if i != j]
    return {"units": count, "steps": steps, "size": size, "seconds_for_both_seeds": round(seconds, 1),
            "same_unit_median_r": float(np.median(np.diag(r))),
            "different_units_median_r": float(np.median(different)),
            "same_unit_median_r_without_the_units": float(np.median(same_without)),
            "different_units_median_r_without_the_units": float(np.median(different_without)),
            "same_unit_beats_every_other_unit": int(sum(r[i, i] > np.delete(r[i], i).max() for i in range(count)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--steps", type=int, default=VISUALIZE.steps)
    parser.add_argument("--size", type=int, default=VISUALIZE.size)
    parser.add_argument("--compare", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = {"ratios": ratios(args.run_dir)}
    if args.units:
        report["seeds"] = seed_agreement(args.run_dir, args.units, args.steps, args.size)
    report["compare"] = []
    for other in args.compare:
        result = compare_runs(args.run_dir, other)
        live = [u for u in result["units"] if not u["silent"]]
        report["compare"].append({"b": str(other), "median_r": round(result["median_r"], 3),
                                  "firing": len(live), "matched_at_match_r": sum(u["r"] >= MATCH_R for u in live),
                                  "detectors_a": result["summary"]["detectors_a"],
                                  "recurring": result["summary"]["recurring"],
                                  "categories": result["summary"]["categories"]})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
