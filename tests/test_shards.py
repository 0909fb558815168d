"""Training data that streams: tar shards (model/data/shards.py), the same pixels as the cache, resume mid-epoch,
disjoint shards per DDP rank, and truncated or corrupt shards skipped and reported."""
import gzip
import json
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import model.network.train
from backend.cli import app
from model.data import dataset
from model.data.frames import FrameSource, decode_frames
from model.network.run import CHECKPOINT, load_run
from model.data.shards import (INDEX, MAX_MEMBER_BYTES, ShardStream, check_shards, current_index, frame_key, load_index,
                               read_shard, write_shards)
from model.network.train import train
from test_train import TINY, make_dataset

REPO = Path(__file__).resolve().parents[1]
STREAMING = replace(TINY, cache_bytes=0)      # any dataset is too big for no cache: train streams
FRAMES_PER_SHARD = 5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """16 videos x 5 frames: 12 train shards, 4 test shards; ~30 kept training frames, 3 steps an epoch."""
    data = make_dataset(tmp_path_factory.mktemp("data"), videos=16)
    write_shards(data, FRAMES_PER_SHARD, progress=False)
    return data


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _reading(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stream.jsonl").read_text().splitlines()]


def _without(row: dict, *keys) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def test_shards_hold_each_frame_once_with_the_pixels_of_its_file(data_dir):
    records = dataset.load_manifest(data_dir)
    index = load_index(data_dir)
    assert sorted(index.frame_ids.tolist()) == list(range(len(records)))
    assert all(len(ids) <= FRAMES_PER_SHARD for ids in map(index.ids, range(len(index.names))))
    cache = FrameSource(data_dir, records, TINY.frame_size, torch.device("cpu"), progress=False)
    for shard, name in enumerate(index.names):
        assert name.startswith(index.splits[shard] + "-")
        ids, jpegs = zip(*read_shard(data_dir / "shards" / name))
        assert list(ids) == index.ids(shard).tolist()
        assert all(records[i].split == index.splits[shard] for i in ids)
        decoded = decode_frames([torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs],
                                TINY.frame_size, "cpu")
        assert torch.equal(decoded, cache.get(np.array(ids)))
    # The test split streams in manifest order: evaluation sees the cache path's batches.
    test_frames = np.array([r.split == "test" for r in records])
    stream = ShardStream(data_dir, index, {}, ~test_frames, test_frames, TINY.frame_size, torch.device("cpu"),
                         4, 100, 0, 0, 1)
    rows, frames = zip(*stream.test_batches(7))
    assert np.concatenate(rows).tolist() == np.flatnonzero(test_frames).tolist()
    assert torch.equal(torch.cat(frames), cache.get(np.flatnonzero(test_frames)))


def test_streaming_trains_and_evaluates_like_the_cache(data_dir, tmp_path):
    untrained_cache = train(data_dir, "cluster", tmp_path / "c0", replace(TINY, epochs=0), progress=False)
    untrained_stream = train(data_dir, "cluster", tmp_path / "s0", replace(STREAMING, epochs=0), progress=False)
    assert untrained_stream["skipped_shards"] == []
    assert _without(untrained_stream, "skipped_shards") == untrained_cache     # same test frames, same order
    run = json.loads((tmp_path / "s0" / "run.json").read_text())
    assert run["frame_source"] == "shards" and json.loads((tmp_path / "c0" / "run.json").read_text())[
        "frame_source"] == "cache"

    final = train(data_dir, "cluster", tmp_path / "s1", replace(STREAMING, epochs=3), progress=False)
    rows = _metrics(tmp_path / "s1")
    assert [r["step"] for r in rows] == [3, 6, 9] and rows[-1] == final
    assert all(np.isfinite(r["loss"]) and 0 <= r["test_accuracy"] <= 1 for r in rows)
    # Every epoch reads every train shard once, in an order of its own.
    opened = {epoch: shards for record in _reading(tmp_path / "s1") for epoch, shards in
              record["ranks"][0]["opened"].items() if epoch != "test"}
    train_shards = {n for n in load_index(data_dir).names if n.startswith("train-")}
    assert set(opened) == {"epoch 0", "epoch 1", "epoch 2"}
    assert all(sorted(shards) == sorted(train_shards) for shards in opened.values())
    assert len({tuple(shards) for shards in opened.values()}) == 3
    # The order is a function of the seed: a rerun trains the same weights, another seed others.
    train(data_dir, "cluster", tmp_path / "s2", replace(STREAMING, epochs=3), progress=False)
    train(data_dir, "cluster", tmp_path / "s3", replace(STREAMING, epochs=3, seed=1), progress=False)
    a, b, c = (load_run(tmp_path / name)[0].state_dict() for name in ("s1", "s2", "s3"))
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], c[name]) for name in a)


def test_resume_mid_epoch_replays_the_stream(data_dir, tmp_path, monkeypatch):
    settings = replace(STREAMING, epochs=3, checkpoint_steps=4)
    reference = tmp_path / "reference"
    train(data_dir, "cluster", reference, settings, progress=False)

    save_atomic = model.network.train.save_atomic

    def crash_after_step_4(state, path):          # dies like a kill right after the checkpoint of step 4
        save_atomic(state, path)
        if path.name == CHECKPOINT and state["step"] == 4:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(model.network.train, "save_atomic", crash_after_step_4)
    crashed = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        train(data_dir, "cluster", crashed, settings, progress=False)
    monkeypatch.setattr(model.network.train, "save_atomic", save_atomic)
    assert torch.load(crashed / CHECKPOINT, weights_only=True)["step"] == 4   # mid-epoch: 3 steps an epoch
    train(data_dir, "cluster", crashed, settings, resume=True, progress=False)
    expected, resumed = _metrics(reference), _metrics(crashed)
    assert [r["step"] for r in resumed] == [r["step"] for r in expected] == [3, 6, 9]
    for want, got in zip(expected, resumed):
        assert got["skipped_shards"] == want["skipped_shards"] == []
        # The training loss of the evaluation after the crash averages only the steps run since the resume.
        differ = ("images_per_s", "skipped_shards") + (("loss",) if want["step"] == 6 else ())
        assert _without(got, *differ) == pytest.approx(_without(want, *differ), rel=1e-5)
    a, b = load_run(reference)[0].state_dict(), load_run(crashed)[0].state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name, rtol=1e-5, atol=1e-6)


def test_resume_without_the_fast_forward_would_differ(data_dir):
    """The test above can fail: the stream resumed at step 4 is the uninterrupted stream's tail, not its start."""
    index = load_index(data_dir)
    labels = np.load(data_dir / "labels" / "cluster.npz")
    test = np.array([r.split == "test" for r in dataset.load_manifest(data_dir)])

    def stream():
        return ShardStream(data_dir, index, {}, labels["keep"], test, TINY.frame_size, torch.device("cpu"),
                           TINY.batch_size, STREAMING.shuffle_buffer, 0, 0, 1)
    whole = [rows.tolist() for rows, _ in stream().train_batches(0, 3)]
    assert len(whole) == 9
    assert [rows.tolist() for rows, _ in stream().train_batches(4, 3)] == whole[4:]
    assert whole[4:] != whole[:5]


def test_a_truncated_and_a_corrupt_shard_are_named_skipped_and_reported(tmp_path, capfd):
    data = make_dataset(tmp_path / "data", videos=16)
    write_shards(data, FRAMES_PER_SHARD, progress=False)
    truncated, corrupt = data / "shards" / "train-000003.tar", data / "shards" / "train-000007.tar"
    truncated.write_bytes(truncated.read_bytes()[:3000])
    with tarfile.open(corrupt) as tar:
        third = tar.getmembers()[2].offset
    with corrupt.open("r+b") as f:                # same size, a garbled header: the tar ends early
        f.seek(third)
        f.write(b"\xff" * 512)
    final = train(data, "cluster", tmp_path / "run", replace(STREAMING, epochs=2), progress=False)
    rows = _metrics(tmp_path / "run")
    assert len(rows) == 2 and rows[0]["step"] > 0 and np.isfinite(final["loss"])      # the rest trained
    skipped = {fault["shard"]: fault["reason"] for fault in final["skipped_shards"]}
    assert set(skipped) == {truncated.name, corrupt.name}
    assert skipped[truncated.name].startswith("truncated: 3,000 of")
    assert "ends after 2 of its 5 frames" in skipped[corrupt.name]
    stderr = capfd.readouterr().err
    assert f"skipping shard {truncated}" in stderr and f"skipping shard {corrupt}" in stderr
    opened = [shard for record in _reading(tmp_path / "run") for rank in record["ranks"]
              for shards in rank["opened"].values() for shard in shards]
    assert truncated.name not in opened and opened.count(corrupt.name) == 1     # once, then never again
    # Writing the shards again rewrites the truncated one only (the corrupt one has its size: delete it to rewrite).
    before = {path.name: path.stat().st_mtime_ns for path in (data / "shards").glob("*.tar")}
    write_shards(data, FRAMES_PER_SHARD, progress=False)
    assert [i for i, _ in read_shard(truncated)] == load_index(data).ids(3).tolist()
    assert [name for name, mtime in before.items() if (data / "shards" / name).stat().st_mtime_ns != mtime] == \
        [truncated.name]


def test_a_compressed_shard_and_a_huge_member_are_refused_without_being_read(data_dir, tmp_path, capfd):
    # Issue 34, item 8: a 306 KB crafted shard cost +600 MB (a compressed tar inflated, a member read whole).
    data = Path(shutil.copytree(data_dir, tmp_path / "data"))
    index = load_index(data)
    folder = data / "shards"
    compressed, huge, good = (folder / index.names[i] for i in index.of_split("test")[:3])
    plain = compressed.read_bytes()           # gzipped, padded with zeros (gzip skips them) to its indexed size
    compressed.write_bytes(gzip.compress(plain).ljust(len(plain), b"\0"))
    declared = 256 << 20                      # a member declaring 256 MiB, all of it a hole in a sparse file
    member = tarfile.TarInfo(f"{frame_key(int(index.ids(index.names.index(huge.name))[0]))}.jpg")
    member.size = declared
    with huge.open("wb") as f:
        f.write(member.tobuf())
        f.truncate(tarfile.BLOCKSIZE + declared + 2 * tarfile.BLOCKSIZE)
    with pytest.raises(ValueError, match="gzip-compressed; shards are plain tar"):
        list(read_shard(compressed))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"declares {declared:,} bytes, over the {MAX_MEMBER_BYTES:,}"):
            list(read_shard(huge))
        assert tracemalloc.get_traced_memory()[1] < 4 << 20         # nothing of the declared size was allocated
    finally:
        tracemalloc.stop()
    # Of the same size as indexed, the compressed one is caught by the cheap check before training ...
    assert check_shards(data, index)[compressed.name].startswith("unreadable: gzip-compressed")
    # ... and, should they get past it, reading skips both, saying why, and streams the rest.
    records = dataset.load_manifest(data)
    test_frames = np.array([r.split == "test" for r in records])
    stream = ShardStream(data, index, {}, ~test_frames, test_frames, TINY.frame_size, torch.device("cpu"),
                         4, 100, 0, 0, 1)
    read = np.concatenate([rows for rows, _ in stream.test_batches(7)]).tolist()
    skipped = {fault["shard"]: fault["reason"] for fault in stream.take_record()["faults"]}
    assert "gzip-compressed" in skipped[compressed.name] and "over the" in skipped[huge.name]
    assert set(index.ids(index.names.index(good.name)).tolist()) <= set(read)
    assert not set(index.ids(index.names.index(compressed.name)).tolist()) & set(read)
    assert f"skipping shard {huge}" in capfd.readouterr().err


def test_a_frame_file_over_the_member_cap_is_left_out_of_the_shards(tmp_path, capfd):
    data = make_dataset(tmp_path / "data", videos=4, frames=2)
    record = dataset.load_manifest(data)[1]
    (data / record.image).write_bytes(b"\xff" * (MAX_MEMBER_BYTES + 1))
    index = write_shards(data, FRAMES_PER_SHARD, progress=False)
    assert index.missing.tolist() == [1] and 1 not in index.frame_ids.tolist()
    assert "frame 1 left out of the shards" in capfd.readouterr().err


def test_write_shards_resumes_and_notices_a_new_manifest(tmp_path):
    data = make_dataset(tmp_path / "data", videos=8, frames=3)
    index = write_shards(data, 4, progress=False)
    folder = data / "shards"
    written = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.glob("*.tar")}
    # A killed run: the index not yet written, one shard not yet renamed.
    (folder / INDEX).unlink()
    (folder / "train-000002.tar").unlink()
    (folder / "plan.json").write_text(json.dumps({"manifest_sha256": index.manifest_sha256, "frames_per_shard": 4}))
    again = write_shards(data, 4, progress=False)
    assert again.names == index.names and again.frame_ids.tolist() == index.frame_ids.tolist()
    for path in folder.glob("*.tar"):
        assert path.read_bytes() == written[path.name][0]                   # the same bytes (mtime 0 in the tar)
        kept = path.stat().st_mtime_ns == written[path.name][1]
        assert kept == (path.name != "train-000002.tar")                     # only the missing one written
    assert not (folder / "plan.json").exists()
    # Another manifest (re-ingested): the shards are stale; train would write them again.
    records = dataset.load_manifest(data)
    textures, spectrum = dataset.load_features(data)
    dataset.write_manifest(data, records[:-3], textures[:-3], spectrum[:-3])
    assert current_index(data) is None
    assert int(write_shards(data, 4, progress=False).counts.sum()) == len(records) - 3


def test_train_writes_the_shards_it_needs_and_the_command_reports_them(tmp_path):
    data = make_dataset(tmp_path / "data", videos=8, frames=3)
    result = CliRunner().invoke(app, ["train", str(data), "--labels", "cluster", "--out", str(tmp_path / "run"),
                                      "--preset", "tiny", "--device", "cpu", "--cache-bytes", "0", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "training streams them from tar shards" in result.output
    assert current_index(data) is not None and len(load_index(data).names) == 2     # one per split
    result = CliRunner().invoke(app, ["shards", str(data), "--frames-per-shard", "4"])
    assert result.exit_code == 0, result.output
    assert "7 shards (5 train, 2 test) of 24 frames" in result.output
    result = CliRunner().invoke(app, ["shards", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "nothing" in result.output


@pytest.mark.slow
def test_two_ddp_ranks_read_disjoint_shards(data_dir, tmp_path):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "backend.cli", "train", str(data_dir), "--labels", "cluster", "--out", str(run_dir),
               "--preset", "tiny", "--device", "cpu", "--epochs", "2", "--cache-bytes", "0"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _metrics(run_dir)
    assert len(rows) == 2 and rows[-1]["skipped_shards"] == [] and np.isfinite(rows[-1]["loss"])
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    train_shards = {n for n in load_index(data_dir).names if n.startswith("train-")}
    by_epoch: dict[str, list[set]] = {}
    for record in _reading(run_dir):
        assert [rank["rank"] for rank in record["ranks"]] == [0, 1]
        for rank in record["ranks"]:
            for epoch, shards in rank["opened"].items():
                if epoch != "test":
                    by_epoch.setdefault(epoch, [set(), set()])[rank["rank"]] |= set(shards)
    assert set(by_epoch) == {"epoch 0", "epoch 1"}
    for first, second in by_epoch.values():
        assert first and second and not first & second                      # disjoint ...
        assert first | second == train_shards                               # ... and together all of them
    load_run(run_dir)
