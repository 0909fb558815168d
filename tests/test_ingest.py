import io
import json
import shutil

import av

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from backend.cli import app
from model.data import dataset
from model.data import media
from model.sound.texture import sound_textures
from model.data.dataset import report_table
from model.data.ingest import (SKIPPED_RECORD, VIDEO_RECORD, IngestReport, frame_times, ingest, ingest_video,
                               split_of, video_id)
from model.data.media import read_audio, write_video

RATE = 22_050
FPS = 10


def make_video(path, seconds, audio="noise", size=(96, 128), seed=0):
    """A small test video: coloured frames; audio 'noise', 'none', 'silent' or 'half' (noise then silence)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((int(seconds * FPS), *size, 3), np.uint8)
    frames[..., 0] = rng.integers(0, 256)
    frames[:, :, size[1] // 2:, 1] = 200
    wave = None
    if audio != "none":
        wave = 0.3 * rng.standard_normal(int(seconds * RATE)).astype(np.float32)
        if audio == "silent":
            wave[:] = 0
        elif audio == "half":
            wave[int(3.0 * RATE):] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, FPS, wave, RATE)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "a.mp4", 6.0, seed=1)
    make_video(root / "sub" / "b.webm", 5.0, seed=2)
    make_video(root / "sub" / "deeper" / "c.mkv", 7.0, audio="half", seed=3)
    make_video(root / "mute.mp4", 5.0, audio="none")
    make_video(root / "short.mp4", 3.0)
    make_video(root / "quiet.mov", 5.0, audio="silent")
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "notes.txt").write_text("not a video: ignored")
    return root


GOOD = ["a.mp4", "sub/b.webm", "sub/deeper/c.mkv"]


@pytest.fixture(scope="module")
def ingested(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return out, ingest(videos, out, workers=2, progress=False)


def test_report_lists_good_and_skipped_videos(ingested, videos):
    out, report = ingested
    assert report.ingested == GOOD
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"mute.mp4", "short.mp4", "quiet.mov", "corrupt.mp4"}
    assert reasons["mute.mp4"] == "no audio stream"
    assert reasons["short.mp4"].startswith("shorter than 3.75 s")
    assert reasons["quiet.mov"] == "silent audio track"
    assert "cannot be opened" in reasons["corrupt.mp4"]
    on_disk = json.loads((out / dataset.REPORT).read_text())
    assert on_disk["ingested"] == GOOD and len(on_disk["skipped"]) == 4
    assert on_disk["videos_dir"] == str(videos.resolve())


def test_manifest_frames_and_features(ingested):
    out, report = ingested
    records = dataset.load_manifest(out)
    textures, spectrum = dataset.load_features(out)
    assert len(records) == report.frames == 30
    assert [r.frame_id for r in records] == list(range(30))
    assert textures.shape == (30, 502) and spectrum.shape == (30, 32)
    assert np.isfinite(textures).all() and np.isfinite(spectrum).all()
    a_frames = [r for r in records if r.video == "a.mp4"]
    np.testing.assert_allclose([r.time for r in a_frames], frame_times(0.0, 6.0), atol=1e-3)
    assert [r.frame_index for r in a_frames] == list(range(10))
    for r in records[::7]:
        assert Image.open(out / r.image).size == (256, 256)
        clip, rate = read_audio(out / r.clip)
        assert len(clip) / rate == pytest.approx(3.75, abs=0.1)
    # Every frame of a video shares its split, and the split is a pure function of the video id.
    for r in records:
        assert r.video_id == video_id(r.video) and r.split == split_of(r.video_id)


def test_partly_silent_video_flags_silent_frames(ingested):
    out, _ = ingested
    half = [r for r in dataset.load_manifest(out) if r.video == "sub/deeper/c.mkv"]
    # Sound stops at 3 s: a clip is silent when it starts after that (time - 1.875 > 3).
    assert [r.silent for r in half] == [r.time - 1.875 > 3.05 for r in half]
    assert any(r.silent for r in half) and not all(r.silent for r in half)


def test_texture_matches_the_video_audio(ingested, videos):
    out, _ = ingested
    record = dataset.load_manifest(out)[3]
    textures, _ = dataset.load_features(out)
    clip, rate = read_audio(videos / record.video, record.time - 1.875, 3.75)
    np.testing.assert_allclose(textures[3], sound_textures(clip[None], rate)[0], rtol=1e-4, atol=1e-5)


def test_split_is_deterministic_and_roughly_the_fraction():
    ids = [video_id(f"clip_{i}.mp4") for i in range(2000)]
    assert video_id("x/y.mp4") == video_id("x/y.mp4") != video_id("x/z.mp4")
    test_share = np.mean([split_of(v, 0.2) == "test" for v in ids])
    assert 0.17 < test_share < 0.23


def test_resume_skips_finished_and_redoes_unfinished(videos, ingested, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(ingested[0], out)
    finished = out / "videos" / video_id("a.mp4") / VIDEO_RECORD
    unfinished = out / "videos" / video_id("sub/b.webm") / VIDEO_RECORD
    skipped = out / "videos" / video_id("quiet.mov") / SKIPPED_RECORD
    stamps = finished.stat().st_mtime_ns, skipped.stat().st_mtime_ns
    unfinished.unlink()              # as if killed before this video finished
    (out / dataset.MANIFEST).unlink()
    report = ingest(videos, out, workers=1, progress=False)
    assert (finished.stat().st_mtime_ns, skipped.stat().st_mtime_ns) == stamps
    assert unfinished.exists()
    assert report.ingested == GOOD and len(report.skipped) == 4
    assert dataset.load_manifest(out) == dataset.load_manifest(ingested[0])


def test_shards_then_merge_equal_one_run(videos, ingested, tmp_path):
    out = tmp_path / "data"
    runner = CliRunner()
    for shard in ("0/2", "1/2"):
        result = runner.invoke(app, ["ingest", str(videos), "--out", str(out), "--shard", shard,
                                     "--workers", "1", "--no-progress"])
        assert result.exit_code == 0, result.output
        assert not (out / dataset.MANIFEST).exists()
    result = runner.invoke(app, ["ingest", "--merge", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 videos ingested (30 frames), 4 skipped, 0 with warnings" in result.output
    table = result.output.split("reason")[-1].splitlines()[1:]      # the table of reasons ends the output
    assert [line.split()[0] for line in table] == ["skipped"] * 4
    assert any(line.split()[-1] == "1" and "silent audio track" in line for line in table)
    assert dataset.load_manifest(out) == dataset.load_manifest(ingested[0])
    np.testing.assert_allclose(dataset.load_features(out)[0], dataset.load_features(ingested[0])[0])


@pytest.mark.parametrize("args, message", [
    (["ingest", "/no/such/dir", "--out", "x"], "not a folder"),
    (["ingest", ".", "--out", "x", "--shard", "3/2"], "0 <= i < n"),
    (["ingest", ".", "--out", "x", "--shard", "half"], "expected i/n"),
    (["ingest", "--merge", "--out", "/no/such/data"], "not an ingest output"),
    (["ingest", ".", "--out", "x", "--device", "tpu"], "use auto, cpu or cuda"),
])
def test_cli_bad_input_is_a_clear_error(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_report_table_counts_each_reason_once_whatever_its_numbers():
    report = IngestReport(videos_dir=None, skipped=[
        dict(path="a.mp4", reason="shorter than 3.75 s (0.50 s)"),
        dict(path="b.mp4", reason="shorter than 3.75 s (3.01 s)"),
        dict(path="c.mp4", reason="cannot be opened (InvalidDataError: [Errno 1094995529] Invalid data: 'c.mp4')"),
        dict(path="d.mp4", reason="frames of 16x16 are smaller than 32 pixels a side")],
        warnings=[dict(path="e.webm", warning="audio decodes to 3.77 s of the 8.01 s its header promises "
                                                "(file cut short?); ingested 0.00-3.77 s")])
    assert report_table(report) == [
        ("skipped", "shorter than N s", 2),
        ("skipped", "cannot be opened", 1),
        ("skipped", "frames of NxN are smaller than N pixels a side", 1),
        ("warning", "audio decodes to N s of the N s its header promises (file cut short?)", 1)]
    assert report_table(IngestReport(videos_dir=None)) == []


class _RangeRecordingFile(io.FileIO):
    """A file that records which byte ranges were read from it."""

    def __init__(self, path, ranges: list):
        super().__init__(path)
        self.ranges = ranges

    def read(self, size=-1):
        at, data = self.tell(), super().read(size)
        self.ranges.append((at, at + len(data)))
        return data

    def readinto(self, buffer):
        at, count = self.tell(), super().readinto(buffer)
        self.ranges.append((at, at + count))
        return count


def _share_read(ranges: list, size: int) -> float:
    covered, end = 0, 0
    for first, last in sorted(ranges):
        covered += max(0, last - max(first, end))
        end = max(end, last)
    return covered / size


def test_long_video_is_read_by_seeking(tmp_path, monkeypatch):
    # 5 minutes of pixel noise (so the video is most of the file) with a keyframe every 2 s.
    path = tmp_path / "long.mp4"
    rng = np.random.default_rng(0)
    noise_rows = rng.integers(0, 256, (64 + 300, 96, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"g": "20", "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = container.add_stream("aac", rate=RATE, layout="mono")
        for i in range(300 * FPS):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(noise_rows[i % 300:i % 300 + 64]), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        wave = av.AudioFrame.from_ndarray((0.1 * rng.standard_normal((1, 300 * RATE))).astype(np.float32),
                                          format="flt", layout="mono")
        wave.sample_rate, wave.pts = RATE, 0
        for packet in [*audio.encode(wave), *audio.encode(None)]:
            container.mux(packet)
    ranges = []
    monkeypatch.setattr(media, "_open", lambda p: av.open(_RangeRecordingFile(str(p), ranges)))
    frames, warnings = ingest_video(tmp_path, "long.mp4", tmp_path / "data")
    assert (frames, warnings) == (10, [])
    # Each frame needs its GOP (<= 2 s) and its clip (3.75 s, read with the video interleaved beside
    # it), the span's ends a few seconds more: a quarter of the file. Decoding it all reads all of it.
    assert _share_read(ranges, path.stat().st_size) < 0.35
    times = [r["time"] for r in json.loads((tmp_path / "data" / "videos" / video_id("long.mp4") /
                                            VIDEO_RECORD).read_text())["frames"]]
    np.testing.assert_allclose(times, frame_times(0.0, 300.0), atol=0.01)
