"""Training end to end on a tiny generated dataset: metrics, binary codes, kill -9 + resume, DDP, errors."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from backend.cli import app
from model.data import dataset
from model.data.frames import random_crop_flip
from model.data.dataset import labels_file
from model.kmeans import cluster_labels
from model.sound.labels import binary_codes
from model.network.run import CHECKPOINT, load_run
from model.settings import TRAIN_PRESETS
from model.network.train import train

TINY = TRAIN_PRESETS["tiny"]
REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, videos=12, frames=5, groups=3, seed=0) -> Path:
    """Frames whose colour follows their sound group, so the sound label is learnable from the image."""
    rng = np.random.default_rng(seed)
    centres, colours = rng.normal(0, 3, (groups, 502)), rng.integers(0, 256, (groups, 3))
    records, textures = [], []
    for v in range(videos):
        folder = root / "videos" / f"v{v}"
        folder.mkdir(parents=True)
        for f in range(frames):
            group = rng.integers(groups)
            pixels = np.clip(colours[group] + rng.normal(0, 30, (256, 256, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"frame_{f:02d}.jpg", quality=90)
            records.append(dataset.FrameRecord(len(records), f"v{v}", f"v{v}.mp4", f, float(f),
                                               f"videos/v{v}/frame_{f:02d}.jpg", f"videos/v{v}/clip_{f:02d}.mp3",
                                               "test" if v % 4 == 0 else "train", False))
            textures.append(centres[group] + rng.normal(0, 1, 502))
    textures = np.array(textures, np.float32)
    dataset.write_manifest(root, records, textures, rng.normal(size=(len(records), 32)))
    train_mask = np.array([r.split == "train" for r in records])
    # Labels written here (not with make_labels) so these tests do not depend on the audio weights.
    (root / "labels").mkdir()
    clusters = cluster_labels(textures, train_mask, k=groups, seed=0, restarts=1)
    np.savez(labels_file(root, "cluster"), kind="cluster", k=groups, labels=clusters.labels,
             centroids=clusters.centroids, distances=clusters.distances, keep=clusters.keep)
    codes = binary_codes(textures, train_mask, bits=8)
    np.savez(labels_file(root, "binary"), kind="binary", bits=8, codes=codes.codes, components=codes.components,
             mean=codes.mean)
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def three_epochs(data_dir, tmp_path_factory):
    """One uninterrupted 3-epoch cluster run (6 steps), trained once: the tests that only read it share it."""
    run_dir = tmp_path_factory.mktemp("three_epochs") / "run"
    return run_dir, train(data_dir, "cluster", run_dir, replace(TINY, epochs=3), progress=False)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_crop_flip_takes_windows_of_the_frame():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.int32).reshape(2, 3, 6, 6)
    crops = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 4, 4)
    for image, crop in zip(images, crops):
        windows = [image[:, t:t + 4, l:l + 4] for t in range(3) for l in range(3)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(-1)) for w in windows)


def test_cluster_training_logs_metrics_and_saves_a_loadable_model(data_dir, three_epochs):
    run_dir, final = three_epochs
    rows = _metrics(run_dir)
    steps_per_epoch = len(np.flatnonzero(np.load(labels_file(data_dir, "cluster"))["keep"])) // TINY.batch_size
    assert [r["step"] for r in rows] == [steps_per_epoch * e for e in (1, 2, 3)]
    assert rows[-1] == final
    assert final["chance"] == pytest.approx(1 / 3) and 0 <= final["majority"] <= 1
    assert all(np.isfinite(r["loss"]) and 0 <= r["test_accuracy"] <= 1 for r in rows)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["label_kind"] == "cluster" and run["config"]["epochs"] == 3
    model, info = load_run(run_dir)
    assert info.num_outputs == 3 and info.crop_size == TINY.crop_size
    assert model.forward_features(torch.zeros(1, 3, 67, 67), "conv5").shape[1] == 256


def test_kept_checkpoints_are_evenly_spaced_evaluated_and_survive_a_resume(data_dir, tmp_path, monkeypatch):
    from model.network import train as training
    from model.network.run import kept_checkpoints

    assert training.kept_steps(10, 3) == [3, 7, 10] and training.kept_steps(10, 0) == [] and \
        training.kept_steps(2, 5) == [1, 2]
    # 3 epochs of 2 steps keep steps 2, 4 and 6: interrupted at the second evaluation (step 4), the run has kept
    # step 2 only, so the resume must both keep what was kept before and add what follows.
    settings = replace(TINY, epochs=3, keep_checkpoints=3)
    reference = tmp_path / "reference"
    train(data_dir, "cluster", reference, settings, progress=False)
    total = _metrics(reference)[-1]["step"]
    expected = training.kept_steps(total, 3)
    assert [step for step, _ in kept_checkpoints(reference)] == expected and expected[-1] == total
    assert set(expected) <= {r["step"] for r in _metrics(reference)}      # each kept step has its accuracy
    # Interrupted at its second evaluation, then resumed: the same steps kept, with the same weights.
    calls = {"n": 0}
    evaluate = training.evaluate

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return evaluate(*args)
    monkeypatch.setattr(training, "evaluate", interrupted)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(data_dir, "cluster", resumed, settings, progress=False)
    assert len(kept_checkpoints(resumed)) < len(expected)
    monkeypatch.setattr(training, "evaluate", evaluate)
    train(data_dir, "cluster", resumed, settings, resume=True, progress=False)
    assert [step for step, _ in kept_checkpoints(resumed)] == expected
    for (_, a), (_, b) in zip(kept_checkpoints(reference), kept_checkpoints(resumed)):
        for name, x in torch.load(a, weights_only=True)["model"].items():
            torch.testing.assert_close(x, torch.load(b, weights_only=True)["model"][name], msg=name,
                                       rtol=1e-4, atol=1e-5)


def test_binary_training_reports_per_bit_accuracy(data_dir, tmp_path):
    final = train(data_dir, "binary", tmp_path / "run", replace(TINY, epochs=1), progress=False)
    assert final["chance"] == 0.5 and 0.5 <= final["majority"] <= 1
    _, info = load_run(tmp_path / "run")
    assert info.multilabel and info.num_outputs == 8


def _cli_train(data_dir, run_dir, *extra):
    return [sys.executable, "-m", "backend.cli", "train", str(data_dir), "--labels", "cluster", "--out",
            str(run_dir), "--preset", "tiny", "--device", "cpu", *extra]


@pytest.mark.slow
def test_resume_after_kill_9_matches_an_uninterrupted_run(data_dir, three_epochs, tmp_path):
    # Killed at its first checkpoint (step 2 of 6): the resumed process still has 4 steps and 2 evaluations to
    # run, and must replay them as the uninterrupted run did.
    reference, _ = three_epochs
    epochs = json.loads((reference / "run.json").read_text())["config"]["epochs"]
    killed = tmp_path / "killed"
    process = subprocess.Popen(_cli_train(data_dir, killed, "--epochs", str(epochs)), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (killed / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(killed / CHECKPOINT, weights_only=True)["step"]
    total = _metrics(reference)[-1]["step"]
    assert killed_at < total, "the run finished before the kill; the test needs a longer run"
    resumed = subprocess.run(_cli_train(data_dir, killed, "--resume"), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    steps = [r["step"] for r in _metrics(killed)]
    assert steps == [r["step"] for r in _metrics(reference)]        # continued, no step logged twice
    # Same batches, crops and dropout masks as the uninterrupted run: the same weights.
    a, _ = load_run(reference)
    b, _ = load_run(killed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_ddp_two_processes_on_gloo(data_dir, tmp_path):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "backend.cli", "train", str(data_dir), "--labels", "cluster", "--out", str(run_dir),
               "--preset", "tiny", "--device", "cpu", "--epochs", "2"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _metrics(run_dir)
    assert len(rows) == 2                          # rank 0 alone writes
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    load_run(run_dir)


def test_bad_input_gives_clear_errors(data_dir, tmp_path):
    runner = CliRunner()
    empty = tmp_path / "nolabels"
    empty.mkdir()
    (empty / "manifest.jsonl").write_text((data_dir / "manifest.jsonl").read_text())
    result = runner.invoke(app, ["train", str(empty), "--labels", "cluster", "--out", str(tmp_path / "r"),
                                 "--preset", "tiny"])
    assert result.exit_code == 1 and "no cluster labels" in result.output
    result = runner.invoke(app, ["train", str(data_dir), "--labels", "cluster", "--out", str(tmp_path / "r"),
                                 "--preset", "tiny", "--batch-size", "1000"])
    assert result.exit_code == 1 and "fewer than one batch" in result.output
    result = runner.invoke(app, ["train", str(data_dir), "--labels", "cluster", "--out", str(tmp_path / "r"),
                                 "--preset", "huge"])
    assert result.exit_code != 0 and "huge" in result.output
    result = runner.invoke(app, ["labels", str(data_dir), "--kind", "cluster", "--k", "500"])
    assert result.exit_code == 1 and "cannot make 500 clusters" in result.output

    all_train = tmp_path / "alltrain"
    all_train.mkdir()
    records = dataset.load_manifest(data_dir)
    textures, spectrum = dataset.load_features(data_dir)
    dataset.write_manifest(all_train, [replace(r, split="train") for r in records], textures, spectrum)
    (all_train / "labels").mkdir()
    (all_train / "labels" / "cluster.npz").write_bytes(labels_file(data_dir, "cluster").read_bytes())
    with pytest.raises(ValueError, match="test split is empty"):
        train(all_train, "cluster", tmp_path / "r2", TINY, progress=False)


def test_a_frame_that_does_not_decode_is_named(tmp_path):
    data = make_dataset(tmp_path / "data", videos=8, frames=3)
    bad = data / "videos/v2/frame_01.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    result = CliRunner().invoke(app, ["train", str(data), "--labels", "cluster", "--out", str(tmp_path / "run"),
                                      "--preset", "tiny", "--device", "cpu"])
    assert result.exit_code == 1
    assert str(bad) in result.output and "not a decodable JPEG" in result.output


def test_the_seed_option_makes_another_training_of_the_same_data(data_dir, tmp_path):
    """`ambient train --seed S`: recorded in run.json; a different seed starts from different weights."""
    runner = CliRunner()
    conv1 = {}
    for seed in (None, 0, 1):
        out = tmp_path / f"run_{seed}"
        extra = [] if seed is None else ["--seed", str(seed)]
        result = runner.invoke(app, ["train", str(data_dir), "--labels", "cluster", "--out", str(out),
                                     "--preset", "tiny", "--epochs", "0", *extra])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "run.json").read_text())["config"]["seed"] == (seed or 0)
        conv1[seed] = next(iter(load_run(out)[0].state_dict().values()))     # the first layer's weights
    assert torch.equal(conv1[None], conv1[0]) and not torch.equal(conv1[0], conv1[1])
