"""make science's target checks (benchmarks/bench_science.py), on rows made up to hit each one."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_science  # noqa: E402


def row(seed=0, accuracy=0.2, majority=0.05, detectors=(("person", 20, True), ("dog", 5, True)),
        scene_sounding=10) -> dict:
    units = [{"category": c, "sounding": sounding} for c, n, sounding in detectors for _ in range(n)]
    sound = bench_science.summarise(units)
    scene = {"detectors": scene_sounding, "sounding": scene_sounding, "silent": 0, "categories": {}}
    return {"seed": seed, "objects": "tuxpaint", "accuracy": accuracy, "majority": majority, "chance": 1 / 30,
            "ratio": accuracy / majority, "sound": sound, "untrained": scene, "scene": scene, "scene_accuracy": 0.9}


def test_each_target_is_checked_on_its_own():
    assert all(bench_science.targets(row()).values())
    assert bench_science.targets(row(accuracy=0.09)) == {"ratio": False, "detectors": True,
                                                         "sounding > silent": True, "sounding > scene's": True}
    assert not bench_science.targets(row(detectors=(("person", 19, True),)))["detectors"]
    assert not bench_science.targets(row(detectors=(("person", 10, True), ("tree", 12, False))))["sounding > silent"]
    assert not bench_science.targets(row(scene_sounding=25))["sounding > scene's"]


def test_the_report_needs_every_seed_and_six_categories_over_all():
    few = [row(seed) for seed in range(3)]                                 # person and dog only
    assert "not all met" in bench_science.report(few, 60.0)
    many = [row(0), row(1, detectors=(("crowd", 10, True), ("waterfall", 10, True), ("bird", 1, True))),
            row(2, detectors=(("baby", 20, True), ("cow", 3, True)))]
    text = bench_science.report(many, 60.0)
    assert "all met" in text and "not all met" not in text and "Categories with a detector over all seeds: 7" in text
    assert "not all met" in bench_science.report(many + [row(3, majority=0.15)], 60.0)


def test_the_report_names_the_commits_its_rows_ran_on():
    text = bench_science.report([row(0) | {"commit": "abc1234"}, row(1) | {"commit": "def5678"}], 60.0)
    assert "Code: commit abc1234, def5678." in text
    assert f"Code: commit {bench_science.code_version()}." in bench_science.report([row(0)], 60.0)


def causal(category, detectors, own, random, other, frames=40) -> dict:
    return {"category": category, "detectors": detectors, "accuracy": 0.15, "random_accuracy": 0.18,
            "random_accuracy_std": 0.01, "own_frames": frames, "own_drop": own, "own_drop_random": random,
            "own_drop_random_std": 0.001, "other_drop": other}


def test_the_causal_check_takes_the_heard_category_with_most_detectors():
    silent_first = row(0) | {"causal": [causal("tree", 9, None, None, None, frames=0),
                                        causal("dog", 5, 0.05, 0.01, 0.02), causal("bird", 2, 0.001, 0.01, 0.0)]}
    assert bench_science.causal_checked(silent_first)["category"] == "dog"
    assert bench_science.causal_met(causal("dog", 5, 0.05, 0.025, 0.02))                   # exactly 2x
    assert not bench_science.causal_met(causal("dog", 5, 0.05, 0.026, 0.02))               # < 2x random
    assert not bench_science.causal_met(causal("dog", 5, 0.05, 0.01, 0.05))                # not > other frames
    missed = row(1) | {"causal": [causal("person", 12, 0.01, 0.01, 0.0)]}
    text = bench_science.report([silent_first, missed, row(2)], 60.0)
    assert "2 seeds (seeds 0); 1 seeds not ablated" in text and "met on 1 of" in text
    assert "| 0 | dog | 5 | 40 | 15.0% / 18.0% (1.0%) | +0.0500 | +0.0100 (0.0010) | +0.0200 | met |" in text
    assert "| 0 | tree | 9 | 0 | 15.0% / 18.0% (1.0%) | - | - | - |  |" in text
    assert "| 1 | person | 12 | 40 |" in text and text.count("| missed |") == 1
    assert "Causal check" not in bench_science.report([row(0)], 60.0)


def test_causal_rows_come_from_the_ablation_json_most_detectors_first():
    ablation = {"ablations": [
        {"units": [1], "category": "dog", "accuracy": 0.1, "random": {"accuracy": 0.2, "accuracy_std": 0.0},
         "truth": {"own_frames": 3, "own_drop": 0.1, "own_drop_random": 0.0, "own_drop_random_std": 0.0,
                   "other_drop": 0.0}},
        {"units": [2, 3], "category": "tree", "accuracy": 0.1, "random": {"accuracy": 0.2, "accuracy_std": 0.0},
         "truth": {"own_frames": 0, "own_drop": None, "own_drop_random": None, "own_drop_random_std": None,
                   "other_drop": 0.0}}]}
    rows = bench_science.causal_rows(ablation)
    assert [(r["category"], r["detectors"], r["own_frames"]) for r in rows] == [("tree", 2, 0), ("dog", 1, 3)]


def localization(sound=(0.4, 0.3), center=(0.3, 0.2), untrained=(0.2, 0.1), scene=None) -> dict:
    def overall(pointing, auc):
        return {"pointing": pointing, "auc": auc, "ciou": 0.1, "mean_ciou": auc, "frames": 100}

    baselines = {"center": {"overall": overall(*center)}, "untrained": {"overall": overall(*untrained)}}
    if scene:
        baselines["scene"] = {"overall": overall(*scene)}
    return {"method": "gradcam", "overall": overall(*sound), "baselines": baselines,
            "negatives": {"offscreen": {"peak_vs_visible": 0.5}, "silent": {"peak_vs_visible": None}}}


def test_the_localisation_target_is_beating_the_centre_and_the_untrained_network_on_pointing_and_auc():
    beats = row(0) | {"localization": bench_science.localization_row(localization(scene=(0.35, 0.25)))}
    loses = row(1) | {"localization": bench_science.localization_row(localization(center=(0.5, 0.2)))}
    assert bench_science.localization_margins(beats) == {"pointing vs center": pytest.approx(0.1),
                                                         "auc vs center": pytest.approx(0.1),
                                                         "pointing vs untrained": pytest.approx(0.2),
                                                         "auc vs untrained": pytest.approx(0.2)}
    text = bench_science.report([beats, loses, row(2)], 60.0)
    assert "met on\n1 of 2 seeds (seeds 0)" in text
    assert "| 0 | 100 | 0.40 / 0.30 / 0.10 | 0.30 / 0.20 / 0.10 | 0.20 / 0.10 / 0.10 | 0.35 / 0.25 / 0.10 " \
           "| x0.50 / - | met |" in text
    assert "| 1 | 100 |" in text and "| - | x0.50 / - | missed: pointing vs center |" in text
    assert "pointing vs center +0.00 (-0.10 to +0.10)" in text
    assert "Where the sound comes from" not in bench_science.report([row(0)], 60.0)
