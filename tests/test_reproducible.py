"""Two runs of the same commands give the same figures: world -> ingest -> labels -> train, twice, from the CLI.

The same small chain also checks what `make science` adds to it: the too-few-steps warning, scene labels
(the scene-trained control) and `--epochs 0` (the untrained control)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from backend.cli import app
from model.data import dataset
from model.network.run import FINAL_MODEL, METRICS, RUN_JSON, RunInfo
from model.settings import FEW_STEPS, TRAIN_PRESETS, WORLD
from model.network.train import few_steps_warning
from model.world import tuxpaint, video_truth
from model.world.scenes import SCENES

TIMINGS = ("images_per_s",)        # wall-clock figures, the only fields allowed to differ


def ambient(*args: str) -> str:
    """One CLI stage, in this process (a subprocess per stage would double the test's time)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def chain(root: Path) -> Path:
    """The demo's stages on a small procedural world (6 videos, 60 frames), the tiny training preset;
    what training printed is kept in root/train.log."""
    ambient("world", str(root / "world"), "--preset", "tiny", "--videos", "6", "--seed", "3",
            "--objects", "procedural")
    ambient("ingest", str(root / "world" / "videos"), "--out", str(root / "data"))
    ambient("labels", str(root / "data"), "--kind", "cluster", "--k", "4")
    log = ambient("train", str(root / "data"), "--labels", "cluster", "--out", str(root / "run"), "--preset", "tiny",
                  "--epochs", "3", "--batch-size", "4")
    (root / "train.log").write_text(log)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return chain(tmp_path_factory.mktemp("first")), chain(tmp_path_factory.mktemp("second"))


def test_rerun_gives_identical_truth_textures_and_labels(runs):
    first, second = runs
    for truth in sorted((first / "world" / "truth").glob("*.json")):
        assert truth.read_text() == (second / "world" / "truth" / truth.name).read_text()
    for name in ("textures.npy", "spectrum.npy"):
        a, b = np.load(first / "data" / name), np.load(second / "data" / name)
        assert a.shape[0] == 60 and np.array_equal(a, b), name
    # The frames as decoded from the videos: x264's frame threads once made these differ between reruns.
    jpegs = sorted((first / "data").rglob("*.jpg"))
    assert len(jpegs) == 60
    for jpeg in jpegs:
        assert jpeg.read_bytes() == (second / "data" / jpeg.relative_to(first / "data")).read_bytes(), jpeg.name
    a, b = np.load(first / "data/labels/cluster.npz"), np.load(second / "data/labels/cluster.npz")
    for key in ("labels", "centroids", "keep"):
        assert np.array_equal(a[key], b[key]), key


def test_rerun_trains_identical_weights_and_metrics(runs):
    first, second = runs
    a = torch.load(first / "run" / FINAL_MODEL, weights_only=True)["model"]
    b = torch.load(second / "run" / FINAL_MODEL, weights_only=True)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    rows = [[json.loads(line) for line in (run / "run" / METRICS).read_text().splitlines()] for run in runs]
    assert len(rows[0]) == 3
    for row_a, row_b in zip(*rows):
        assert {k: v for k, v in row_a.items() if k not in TIMINGS} == \
            {k: v for k, v in row_b.items() if k not in TIMINGS}
    # The weights moved from their seeded initial values (an untrained network would compare equal too).
    torch.manual_seed(TRAIN_PRESETS["tiny"].seed)
    initial = RunInfo.from_dict(json.loads((first / "run" / RUN_JSON).read_text())).build_model().state_dict()
    assert not torch.equal(initial["conv1.0.weight"], a["conv1.0.weight"])


def test_the_tiny_chain_warns_that_it_trains_too_few_steps(runs):
    # 60 frames, ~24 kept for training: 3 epochs of batch 4 is 18 steps (the chain's own training said so).
    log = (runs[0] / "train.log").read_text()
    assert "warning: --preset tiny gives only" in log and "fewer than about 200" in log and "--epochs" in log


def test_few_steps_warning_says_what_to_change():
    demo = TRAIN_PRESETS["demo"]
    assert few_steps_warning(1536, demo, "demo") is None              # the demo world's kept frames
    message = few_steps_warning(250, demo, "demo")                     # a user's 50 videos
    steps = demo.epochs * (250 // demo.batch_size)
    assert f"only {steps} training steps" in message
    epochs = int(message.split("--epochs ")[1].split()[0])
    batch = int(message.split("--batch-size ")[1].rstrip(".").split()[0])
    assert epochs * (250 // demo.batch_size) >= FEW_STEPS > (epochs - 1) * (250 // demo.batch_size)
    assert demo.epochs * (250 // batch) >= FEW_STEPS
    assert few_steps_warning(250, replace(demo, epochs=0), "demo") is None   # the untrained control


def test_scene_labels_come_from_the_world_truth_and_train_like_clusters(runs):
    data = runs[0] / "data"
    ambient("labels", str(data), "--kind", "scene")
    saved = np.load(data / "labels" / "scene.npz")
    records = dataset.load_manifest(data)
    names = [str(n) for n in saved["names"]]
    assert names == [scene.name for scene in SCENES] and int(saved["k"]) == len(SCENES)
    for record, label in zip(records, saved["labels"]):
        truth, _ = video_truth(runs[0] / "world", record.video)
        assert names[label] == truth["scene"]
    # The sound network's training frames: the two networks differ only in their targets.
    assert np.array_equal(saved["keep"], np.load(data / "labels" / "cluster.npz")["keep"])
    ambient("train", str(data), "--labels", "scene", "--out", str(runs[0] / "scene"), "--preset", "tiny",
            "--epochs", "1", "--batch-size", "4")
    row = json.loads((runs[0] / "scene" / METRICS).read_text().splitlines()[-1])
    assert row["chance"] == pytest.approx(1 / len(SCENES)) and row["step"] > 0


def test_zero_epochs_saves_the_untrained_network(runs):
    out = runs[0] / "untrained"
    ambient("train", str(runs[0] / "data"), "--labels", "cluster", "--out", str(out), "--preset", "tiny",
            "--epochs", "0")
    weights = torch.load(out / FINAL_MODEL, weights_only=True)["model"]
    torch.manual_seed(TRAIN_PRESETS["tiny"].seed)
    initial = RunInfo.from_dict(json.loads((out / RUN_JSON).read_text())).build_model().state_dict()
    assert all(torch.equal(weights[name], initial[name]) for name in initial)
    rows = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["step"] == 0 and 0 <= rows[0]["test_accuracy"] <= 1


def _encode_after_garbage(args: tuple[int, str]) -> str:
    """Leave garbage of a seed-dependent size in this process's heap, then encode the same frames."""
    import hashlib
    from model.data.media import write_video
    seed, out = args
    rng = np.random.default_rng(seed)
    junk = [rng.integers(0, 255, int(rng.integers(10_000, 400_000)), dtype=np.uint8).tobytes() for _ in range(200)]
    del junk[::2]
    frames = np.load(Path(out) / "frames.npy")
    write_video(Path(out) / f"{seed}.mp4", frames, 10)
    return hashlib.md5((Path(out) / f"{seed}.mp4").read_bytes()).hexdigest()


@pytest.mark.skipif(not tuxpaint.available(), reason="tuxpaint-stamps-default is not installed")
def test_world_videos_do_not_depend_on_what_the_heap_held(tmp_path, monkeypatch):
    """libx264 reads memory it never wrote: without fill_fresh_memory the frames of world seed 0's video 47
    (a beach) encoded to 3 different files in 8 processes; generate_world's encoding pool fills it."""
    import ctypes
    import model.world.generate as generate
    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("the C library has no mallopt (not glibc)")
    captured = {}
    monkeypatch.setattr(generate, "write_video", lambda path, frames, *rest: captured.setdefault("frames", frames))
    (tmp_path / "videos").mkdir()
    (tmp_path / "truth").mkdir()
    generate.generate_video(generate._Job(47, 0, 6.0, "tuxpaint", str(tmp_path), WORLD))
    np.save(tmp_path / "frames.npy", captured["frames"])
    with generate.encoding_pool(2) as pool:
        hashes = set(pool.map(_encode_after_garbage, [(seed, str(tmp_path)) for seed in range(8)]))
    assert len(hashes) == 1
