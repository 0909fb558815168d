"""make science's target checks (benchmarks/bench_science.py), on rows made up to hit each one."""
from __future__ import annotations

import sys
from pathlib import Path

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
