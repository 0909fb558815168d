"""The demo's scientific finding on several world seeds (`make science`; tens of minutes on 2 cores).

For each world seed: the demo pipeline through the CLI (world --preset demo --seed S, ingest, labels,
train --preset demo, units --split all, dissect --truth), and two controls on the same world and
frames: the same network untrained (`train --epochs 0`) and trained to predict the scene from the
world's truth (`labels --kind scene`, `train --labels scene`), a stand-in for the paper's Places
network. Figures come from the files the stages write (RUN_DIR/metrics.jsonl, RUN_DIR/dissection.json).
One row per seed, median and range over seeds, and the issue's targets checked on every seed:

- held-out accuracy >= 2x the majority cluster's share of test frames;
- >= 20 detectors (precision >= 60%), more of them for sounding categories than for silent ones;
- more sounding-category detectors than the scene-trained control (paper Table 1 row 2: 49 vs 26);
- over all seeds, detectors for >= 6 different categories.

Then the causal check (`ambient ablate sound --detectors`): for each category with detectors, its
detectors switched off against as many random conv5 units (20 draws), measured as the drop in the
true sound label's mean probability on the test frames whose heard sources (the world's truth)
include the category and on the other test frames. Target, on every seed, for the category with the
most detectors among those some test frame hears: own-frames drop >= 2x the random units' and > the
other frames' drop.

Then where the sound comes from (`ambient localize sound --scene-run scene`): the Grad-CAM heatmap of each test
frame's true sound label against the heard objects' pixels (the world's truth): the pointing game and the AUC of
cIoU, beside a centre prior, the untrained network and the scene-trained control on the same frames. Target, on
every seed: the sound network beats the centre prior and the untrained network on pointing and on AUC.

    .venv/bin/python benchmarks/bench_science.py [--seeds 0 1 2 3 4] [--out DIR] [--no-controls]
    .venv/bin/python benchmarks/bench_science.py --out DIR --report-only    # the table from a kept --out
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from model.settings import ABLATION, DETECTOR_PRECISION, TRAIN_PRESETS, WORLD_PRESETS  # noqa: E402
from report import write_section  # noqa: E402

AMBIENT = str(REPO / ".venv" / "bin" / "ambient")
PRESET = "demo"
TARGET_RATIO, TARGET_DETECTORS, TARGET_CATEGORIES = 2.0, 20, 6
TARGET_CAUSAL = 2.0      # own frames' drop >= this x the random units' drop


def ambient(log, *args: str, done: Path | None = None) -> None:
    """Run one CLI stage, its output appended to the log; a failing stage stops the benchmark.

    A stage whose output ``done`` exists already (a rerun with the same --out) is not run again.
    """
    if done is not None and done.exists():
        print(f"  {args[0]}: kept {done}", flush=True)
        return
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ ambient {' '.join(args)}\n")
        out.flush()
        subprocess.run([AMBIENT, *args], stdout=out, stderr=subprocess.STDOUT, check=True, cwd=REPO)
    print(f"  {args[0]} {time.perf_counter() - started:.0f} s", flush=True)


def final_metrics(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows[-1]


def detectors(run_dir: Path) -> list[dict]:
    labels = json.loads((run_dir / "dissection.json").read_text())
    return [u for u in labels if u["category"] and u["precision"] >= DETECTOR_PRECISION]


def summarise(units: list[dict]) -> dict:
    return {"detectors": len(units), "sounding": sum(u["sounding"] for u in units),
            "silent": sum(not u["sounding"] for u in units),
            "categories": dict(Counter(u["category"] for u in units).most_common())}


def collect(seed: int, work: Path) -> dict:
    """One seed's row from the files its stages wrote; a control not (yet) dissected is left out."""
    metrics = final_metrics(work / "sound")
    row = {"seed": seed, "objects": json.loads((work / "world" / "world.json").read_text())["objects"],
           "accuracy": metrics["test_accuracy"], "majority": metrics["majority"], "chance": metrics["chance"],
           "ratio": metrics["test_accuracy"] / metrics["majority"], "sound": summarise(detectors(work / "sound"))}
    for control in ("untrained", "scene"):
        if (work / control / "dissection.json").exists():
            row[control] = summarise(detectors(work / control))
    if "scene" in row:
        row["scene_accuracy"] = final_metrics(work / "scene")["test_accuracy"]
    if (work / "sound" / "ablation_conv5.json").exists():
        row["causal"] = causal_rows(json.loads((work / "sound" / "ablation_conv5.json").read_text()))
    if (work / "sound" / "localization.json").exists():
        row["localization"] = localization_row(json.loads((work / "sound" / "localization.json").read_text()))
    if (work / "science.json").exists():        # how long the seed's stages took when they ran, and on what code
        kept = json.loads((work / "science.json").read_text())
        row.update({key: kept[key] for key in ("minutes", "commit") if key in kept})
    return row


def causal_rows(ablation: dict) -> list[dict]:
    """One row per category whose detectors `ambient ablate --detectors` switched off, most detectors first."""
    rows = []
    for a in ablation["ablations"]:
        truth = a.get("truth") or {}
        rows.append({"category": a["category"], "detectors": len(a["units"]), "accuracy": a["accuracy"],
                     "random_accuracy": a["random"]["accuracy"], "random_accuracy_std": a["random"]["accuracy_std"],
                     "own_frames": truth.get("own_frames", 0), "own_drop": truth.get("own_drop"),
                     "own_drop_random": truth.get("own_drop_random"),
                     "own_drop_random_std": truth.get("own_drop_random_std"), "other_drop": truth.get("other_drop")})
    return sorted(rows, key=lambda r: -r["detectors"])


def causal_checked(row: dict) -> dict | None:
    """The category the causal target is checked on: the most detectors among those some test frame hears."""
    heard = [c for c in row.get("causal", []) if c["own_drop"] is not None]
    return heard[0] if heard else None


def causal_met(checked: dict) -> bool:
    return (checked["own_drop"] >= TARGET_CAUSAL * checked["own_drop_random"]
            and checked["own_drop"] > checked["other_drop"])


def causal_line(seed: int, c: dict) -> str:
    if c["own_drop"] is None:
        return f"  seed {seed} {c['category']} ({c['detectors']} detectors): no test frame hears it"
    return (f"  seed {seed} {c['category']} ({c['detectors']} detectors, {c['own_frames']} frames hear it): "
            f"true-label probability drop {c['own_drop']:+.4f} vs random units {c['own_drop_random']:+.4f} "
            f"(sd {c['own_drop_random_std']:.4f}), other frames {c['other_drop']:+.4f}")


def analyse(log: Path, run_dir: Path, data_dir: Path) -> dict:
    # Files only (RUN_DIR/units_conv5.npz, dissection.json): the figures need no database.
    ambient(log, "units", str(run_dir), "--pool", str(data_dir), "--split", "all", "--no-publish",
            done=run_dir / "units_conv5.npz")
    ambient(log, "dissect", str(run_dir), "--truth", "--no-publish", done=run_dir / "dissection.json")
    return summarise(detectors(run_dir))


def run_seed(seed: int, root: Path, controls: bool) -> dict:
    """The demo pipeline and its controls on world seed `seed`, in root/seed<S>/."""
    work = root / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    world, data = work / "world", work / "data"
    started = time.perf_counter()
    print(f"== world seed {seed} ({work})", flush=True)
    ambient(log, "world", str(world), "--preset", PRESET, "--seed", str(seed), done=world / "world.json")
    ambient(log, "ingest", str(world / "videos"), "--out", str(data), done=data / "manifest.jsonl")
    ambient(log, "labels", str(data), "--kind", "cluster", done=data / "labels" / "cluster.npz")
    ambient(log, "train", str(data), "--labels", "cluster", "--out", str(work / "sound"), "--preset", PRESET,
            done=work / "sound" / "model.pt")
    if analyse(log, work / "sound", data)["detectors"]:
        # The causal check: each category's detectors switched off (its own stage, kept like the others).
        ambient(log, "ablate", str(work / "sound"), "--detectors", "--no-publish",
                done=work / "sound" / "ablation_conv5.json")
    if controls:
        ambient(log, "train", str(data), "--labels", "cluster", "--out", str(work / "untrained"),
                "--preset", PRESET, "--epochs", "0", done=work / "untrained" / "model.pt")
        analyse(log, work / "untrained", data)
        ambient(log, "labels", str(data), "--kind", "scene", done=data / "labels" / "scene.npz")
        ambient(log, "train", str(data), "--labels", "scene", "--out", str(work / "scene"), "--preset", PRESET,
                done=work / "scene" / "model.pt")
        analyse(log, work / "scene", data)
    # Where the sound comes from, beside the centre prior, the untrained network and (with controls) the scene control.
    ambient(log, "localize", str(work / "sound"), *(["--scene-run", str(work / "scene")] if controls else []),
            "--no-publish", done=work / "sound" / "localization.json")
    row = collect(seed, work)
    for category in row.get("causal", []):
        print(causal_line(seed, category), flush=True)
    # A finished seed run again keeps the time and commit of the run that did its stages.
    row.setdefault("minutes", (time.perf_counter() - started) / 60)
    row.setdefault("commit", code_version())
    (work / "science.json").write_text(json.dumps(row, indent=1))
    return row


def targets(row: dict) -> dict[str, bool]:
    sound = row["sound"]
    checks = {"ratio": row["ratio"] >= TARGET_RATIO, "detectors": sound["detectors"] >= TARGET_DETECTORS,
              "sounding > silent": sound["sounding"] > sound["silent"]}
    if "scene" in row:
        checks["sounding > scene's"] = sound["sounding"] > row["scene"]["sounding"]
    return checks


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def categories_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def table(rows: list[dict]) -> str:
    head = ("| seed | accuracy | majority | chance | ratio | detectors (sounding/silent) | categories "
            "| untrained | scene-trained (accuracy) | targets |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        s, failed = r["sound"], [name for name, ok in targets(r).items() if not ok]
        untrained = f"{r['untrained']['detectors']} ({r['untrained']['sounding']}/{r['untrained']['silent']})" \
            if "untrained" in r else "-"
        scene = (f"{r['scene']['detectors']} ({r['scene']['sounding']}/{r['scene']['silent']}), "
                 f"{r['scene_accuracy']:.1%}" if "scene" in r else "-")
        lines.append(f"| {r['seed']} | {r['accuracy']:.1%} | {r['majority']:.1%} | {r['chance']:.1%} "
                     f"| {r['ratio']:.2f}x | {s['detectors']} ({s['sounding']}/{s['silent']}) "
                     f"| {categories_text(s['categories'])} | {untrained} | {scene} "
                     f"| {'met' if not failed else 'missed: ' + ', '.join(failed)}"
                     f"{'' if 'scene' in r else ' (scene control not run)'} |")
    return head + "\n".join(lines)


def causal_table(rows: list[dict]) -> str:
    head = ("| seed | category | detectors | frames that hear it | accuracy: ablated / random units (sd) "
            "| own frames' drop | random units' drop (sd) | other frames' drop | checked |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        checked = causal_checked(r)
        for c in r.get("causal", []):
            heard = c["own_drop"] is not None
            mark = ("met" if causal_met(c) else "missed") if c is checked else ""
            lines.append(f"| {r['seed']} | {c['category']} | {c['detectors']} | {c['own_frames']} "
                         f"| {c['accuracy']:.1%} / {c['random_accuracy']:.1%} ({c['random_accuracy_std']:.1%}) "
                         + (f"| {c['own_drop']:+.4f} | {c['own_drop_random']:+.4f} ({c['own_drop_random_std']:.4f}) "
                            f"| {c['other_drop']:+.4f} " if heard else "| - | - | - ")
                         + f"| {mark} |")
    return head + "\n".join(lines)


def causal_report(rows: list[dict]) -> str:
    """The causal check's paragraph and table; empty when no seed was ablated."""
    ablated = [r for r in rows if "causal" in r]
    if not ablated:
        return ""
    checked = {r["seed"]: causal_checked(r) for r in ablated}
    met = [seed for seed, c in checked.items() if c is not None and causal_met(c)]
    ratios = [c["own_drop"] / c["own_drop_random"] for c in checked.values() if c and c["own_drop_random"] > 0]
    # A ratio to a random drop of zero or less means nothing: those seeds are named, not averaged in.
    no_ratio = [str(seed) for seed, c in checked.items() if c and c["own_drop_random"] <= 0]
    return f"""
Causal check (`ambient ablate sound --detectors`, {ABLATION.random_repeats} random draws of as many other conv5 units
per category): each category's detectors switched off on the test split; drops are in the true sound label's mean
probability on the test frames whose heard sources include the category ("own"), and on the other test frames.
Target: on every seed, for the category with the most detectors among those some test frame hears ("checked"),
own drop >= {TARGET_CAUSAL:g}x the random units' own drop and > the other frames' drop: met on {len(met)} of
{len(ablated)} seeds{f" (seeds {', '.join(map(str, met))})" if met else ""}{'' if len(ablated) == len(rows) else
f"; {len(rows) - len(ablated)} seeds not ablated"}. Own drop / random units' own drop on the checked categories: {
spread(ratios, '.1f') + 'x (median, range)' if ratios else 'n/a'}{
f" (seed{'s' if len(no_ratio) > 1 else ''} {', '.join(no_ratio)} left out: random units there raised the own frames' probability, a drop <= 0)"
if no_ratio else ''}.

{causal_table(ablated)}
"""


LOCALIZED = ("sound", "center", "untrained", "scene")


def localization_row(localization: dict) -> dict:
    """{network: {pointing, auc, ciou, mean_ciou, frames}} of RUN_DIR/localization.json, and the negatives' peaks."""
    row = {"sound": localization["overall"], "method": localization["method"],
           **{name: b["overall"] for name, b in localization["baselines"].items()}}
    row["offscreen_peak"] = localization["negatives"]["offscreen"]["peak_vs_visible"]
    row["silent_peak"] = localization["negatives"]["silent"]["peak_vs_visible"]
    return row


def localization_margins(row: dict) -> dict[str, float]:
    """The sound network's pointing and AUC minus the centre prior's and the untrained network's."""
    loc = row["localization"]
    return {f"{figure} vs {baseline}": loc["sound"][figure] - loc[baseline][figure]
            for baseline in ("center", "untrained") for figure in ("pointing", "auc")}


def localization_report(rows: list[dict]) -> str:
    """The localisation paragraph and table; empty when no seed was localised."""
    localized = [r for r in rows if "localization" in r]
    if not localized:
        return ""
    names = [n for n in LOCALIZED if any(n in r["localization"] for r in localized)]
    head = ("| seed | frames | " + " | ".join(f"{n} pointing / AUC / cIoU" for n in names)
            + " | peak off screen / silent vs visible | beats centre and untrained |\n|"
            + "---|" * (len(names) + 4) + "\n")
    lines, met = [], []
    for r in localized:
        loc, margins = r["localization"], localization_margins(r)
        failed = [name for name, margin in margins.items() if not margin > 0]
        if not failed:
            met.append(r["seed"])
        cells = " | ".join(f"{loc[n]['pointing']:.2f} / {loc[n]['auc']:.2f} / {loc[n]['ciou']:.2f}" if n in loc else "-"
                           for n in names)
        peaks = " / ".join("-" if loc[k] is None else f"x{loc[k]:.2f}" for k in ("offscreen_peak", "silent_peak"))
        lines.append(f"| {r['seed']} | {loc['sound']['frames']} | {cells} | {peaks} "
                     f"| {'met' if not failed else 'missed: ' + ', '.join(failed)} |")
    def signed_spread(values: list[float]) -> str:
        return f"{statistics.median(values):+.2f} ({min(values):+.2f} to {max(values):+.2f})"

    spreads = "; ".join(f"{name} {signed_spread([localization_margins(r)[name] for r in localized])}"
                        for name in localization_margins(localized[0]))
    return f"""
Where the sound comes from (`ambient localize sound --scene-run scene`, {localized[0]['localization']['method']} heatmaps
of the true sound label on the test frames with a heard source in view, against the heard objects' pixels): pointing
is the share of frames whose heatmap peak lies on a heard object; cIoU the share whose heatmap, above its median,
has IoU >= 0.5 with them (LVS / EZ-VSL's convention); AUC the area under that share over cIoU thresholds 0 to 1.
Target: on every seed the sound network beats the centre prior and the untrained network on pointing and AUC: met on
{len(met)} of {len(localized)} seeds{f" (seeds {', '.join(map(str, met))})" if met else ""}. Sound minus baseline,
median (range): {spreads}.

{head}{chr(10).join(lines)}
"""


def code_version() -> str:
    """The commit the figures come from (a table is only comparable with runs of the same world code)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        # BENCHMARKS.md is what this benchmark writes, not code.
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if changed else "")


def report(rows: list[dict], seconds: float) -> str:
    all_categories = sorted({c for r in rows for c in r["sound"]["categories"]})
    met = all(all(targets(r).values()) and "scene" in r for r in rows) and len(all_categories) >= TARGET_CATEGORIES
    spreads = (f"accuracy {spread([r['accuracy'] for r in rows], '.1%')}, majority "
               f"{spread([r['majority'] for r in rows], '.1%')}, ratio {spread([r['ratio'] for r in rows], '.2f')}x, "
               f"detectors {spread([r['sound']['detectors'] for r in rows], 'g')}, sounding "
               f"{spread([r['sound']['sounding'] for r in rows], 'g')}")
    if all("scene" in r for r in rows):
        spreads += (f"; scene-trained control: sounding detectors "
                    f"{spread([r['scene']['sounding'] for r in rows], 'g')}; untrained: detectors "
                    f"{spread([r['untrained']['detectors'] for r in rows], 'g')}")
    commits = {r.get("commit") for r in rows}
    commits = sorted(commits - {None} | ({code_version()} if None in commits else set()))   # git once, if at all
    world, train = WORLD_PRESETS[PRESET], TRAIN_PRESETS[PRESET]
    return f"""\
`benchmarks/bench_science.py` (`make science`): the demo pipeline through the CLI on world seeds
{', '.join(str(r['seed']) for r in rows)} (`ambient world --preset {PRESET} --seed S`: {world.videos} videos x
{world.duration_s:g} s, {rows[0]['objects']} objects; `labels --kind cluster`; `train --preset {PRESET}`:
{train.epochs} epochs, batch {train.batch_size}; `units --split all`; `dissect --truth`). Accuracy is the held-out
(test split) accuracy at the last epoch; majority is the most frequent training cluster's share of test frames;
detectors are conv5 units whose top 60 images contain one category at >= {DETECTOR_PRECISION:.0%} precision.
Controls on the same world and frames: the same network untrained (`train --epochs 0`), and trained on the
scene from the world's truth (`labels --kind scene`, 6 classes; the paper's Places network).
Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {datetime.date.today().isoformat()};
{f"{seconds / 60:.0f} minutes in all ({seconds / 60 / len(rows):.0f} a seed)" if seconds == seconds else "assembled from kept runs (--report-only)"}; load average {os.getloadavg()[0]:.1f} at the end.
Code: commit {', '.join(commits)}.

{table(rows)}

Median (range) over seeds: {spreads}. Categories with a detector over all seeds: {len(all_categories)}
({', '.join(all_categories)}). Targets (ratio >= {TARGET_RATIO:g}x, >= {TARGET_DETECTORS} detectors, sounding > silent,
sounding > the scene-trained control's, on every seed; >= {TARGET_CATEGORIES} categories over all seeds):
{'all met' if met else 'not all met (see the last column)'}.
{causal_report(rows)}{localization_report(rows)}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None, help="keep the worlds, datasets and runs here")
    parser.add_argument("--no-controls", action="store_true", help="skip the untrained and scene controls")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--section", default="Science",
                        help="BENCHMARKS.md section to write (e.g. one for seeds beyond the benchmark's 0-4)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report what the seeds' stages already wrote in --out")
    args = parser.parse_args()
    if args.report_only:
        if args.out is None:
            parser.error("--report-only needs --out")
        rows = [collect(seed, args.out / f"seed{seed}") for seed in args.seeds
                if (args.out / f"seed{seed}" / "sound" / "dissection.json").exists()]
        if not rows:
            parser.error(f"no seed<S>/sound/dissection.json in {args.out}")
    else:
        with tempfile.TemporaryDirectory(prefix="ambient-science-") as tmp:
            root = args.out or Path(tmp)
            rows = [run_seed(seed, root, not args.no_controls) for seed in args.seeds]
    minutes = [r.get("minutes") for r in rows]        # what the seeds' stages took, also for kept runs
    seconds = 60 * sum(minutes) if None not in minutes else float("nan")
    text = report(rows, seconds)
    print(text)
    if not args.no_write:
        write_section(args.section, text)


if __name__ == "__main__":
    main()
