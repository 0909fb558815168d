"""Hostile media: one ingest run over 20+ broken files and a few good ones skips each broken file
with its reason and keeps the rest; a damaged dataset and a full disk fail clearly."""
from __future__ import annotations

import errno
import json
import shutil

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from app_helpers import jpeg
from backend.cli import app
from model.data import dataset
from model.data import ingest as ingest_module
from model.data.ingest import SKIPPED_RECORD, ingest, merge_videos, video_id
from model.data.media import write_audio_clip

RATE = 22_050
FPS = 10
WAVEFORMS = {"noise": lambda n, rng: 0.3 * rng.standard_normal(n), "zeros": lambda n, rng: np.zeros(n),
             "nan": lambda n, rng: np.full(n, np.nan), "whisper": lambda n, rng: 1e-7 * rng.standard_normal(n)}


def mux(path, seconds=4.0, size=(48, 64), frames=None, video_codec="libx264", audio_codec="aac",
        audio="noise", audio_rate=RATE, options=None, seed=0):
    """A video written with PyAV: `size` frames (None: no video stream), `audio` one of WAVEFORMS or None."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w", options=options or {}) as container:
        video = audio_stream = None
        if size is not None:
            video = container.add_stream(video_codec, rate=FPS)
            video.height, video.width = size
            video.pix_fmt = "yuvj420p" if video_codec == "mjpeg" else "yuv420p"
        if audio is not None:
            audio_stream = container.add_stream(audio_codec, rate=audio_rate, layout="mono")
        if video is not None:
            image = np.zeros((*size, 3), np.uint8)
            image[..., 0] = rng.integers(0, 256)
            image[:, size[1] // 2:, 1] = 200
            for _ in range(frames if frames is not None else int(seconds * FPS)):
                for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in video.encode(None):
                container.mux(packet)
        if audio_stream is not None:
            samples = WAVEFORMS[audio](int(seconds * audio_rate), rng).astype(np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts = audio_rate, 0
            for packet in [*audio_stream.encode(frame), *audio_stream.encode(None)]:
                container.mux(packet)


def noise(seconds: float) -> np.ndarray:
    return (0.3 * np.random.default_rng(5).standard_normal(int(seconds * RATE))).astype(np.float32)


GOOD = ["good.mp4", "good.webm", "naïve été #1.mp4", "avi_inside.mkv", "UPPER.MP4", "cut_half.webm",
        "faststart_half.mp4"]
# Files cut short that still hold a clip where both streams decode: ingested for that part, with a warning.
WARNED = {"cut_half.webm": "s its header promises (file cut short?)",
          "faststart_half.mp4": "s its header promises ("}


def make_corpus(folder) -> dict[str, str]:
    """Write the good videos and the broken inputs into `folder`; returns {broken file: expected reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    mux(folder / "good.mp4", seed=1)
    mux(folder / "good.webm", video_codec="libvpx-vp9", audio_codec="libopus", audio_rate=48_000, seed=2)
    mux(folder / "naïve été #1.mp4", seed=3)
    mux(folder / "avi.avi", video_codec="mpeg4", audio_codec="mp3", seed=4)
    (folder / "avi.avi").rename(folder / "avi_inside.mkv")          # the content decides, not the suffix
    mux(folder / "UPPER.MP4", seed=6)
    mux(folder / "cut_half.webm", seconds=12, video_codec="libvpx-vp9", audio_codec="libopus", audio_rate=48_000,
        seed=8)
    whole = (folder / "cut_half.webm").read_bytes()           # its header still says 12 s; ~6 s decode
    (folder / "cut_half.webm").write_bytes(whole[: len(whole) // 2])
    mux(folder / "faststart_half.mp4", seconds=16, options={"movflags": "faststart"}, seed=9)
    whole = (folder / "faststart_half.mp4").read_bytes()      # its index lists 16 s; ~8 s decode
    (folder / "faststart_half.mp4").write_bytes(whole[: len(whole) // 2])
    good = (folder / "good.mp4").read_bytes()

    broken = {}

    def add(name, reason):
        broken[name] = reason

    (folder / "zero_bytes.mp4").write_bytes(b"")
    add("zero_bytes.mp4", "cannot be opened")
    (folder / "random_bytes.mp4").write_bytes(np.random.default_rng(1).bytes(20_000))
    add("random_bytes.mp4", "cannot be opened")
    (folder / "text.mkv").write_text("this is not a video\n" * 100)
    add("text.mkv", "cannot be opened")
    (folder / "photo.mp4").write_bytes(jpeg((200, 10, 10), 64))      # wrong extension: a JPEG
    add("photo.mp4", "no audio stream")
    (folder / "truncated_half.mp4").write_bytes(good[: len(good) // 2])   # lost its index (moov) at the end
    add("truncated_half.mp4", "cannot be opened")
    (folder / "truncated_head.mp4").write_bytes(good[:200])
    add("truncated_head.mp4", "cannot be opened")
    (folder / "header_then_noise.mp4").write_bytes(good[:32] + np.random.default_rng(2).bytes(30_000))
    add("header_then_noise.mp4", "cannot be opened")
    mux(folder / "faststart_cut.mp4", seconds=8, options={"movflags": "faststart"})
    cut = (folder / "faststart_cut.mp4").read_bytes()                # index first, data cut short
    (folder / "faststart_cut.mp4").write_bytes(cut[: len(cut) // 3])
    add("faststart_cut.mp4", "of the 8.00 s its header promises (file cut short?)")
    mux(folder / "scrambled.mp4", seconds=5)
    scrambled = bytearray((folder / "scrambled.mp4").read_bytes())
    quarter = len(scrambled) // 4
    scrambled[quarter: 2 * quarter] = np.random.default_rng(3).bytes(quarter)
    (folder / "scrambled.mp4").write_bytes(bytes(scrambled))
    add("scrambled.mp4", "corrupt")
    mux(folder / "no_audio.mp4", audio=None)
    add("no_audio.mp4", "no audio stream")
    mux(folder / "audio_only.mp4", size=None)
    add("audio_only.mp4", "no video stream")
    write_audio_clip(noise(5), RATE, folder / "song.mp3")
    (folder / "song.mp3").rename(folder / "song_mp3.mp4")
    add("song_mp3.mp4", "no video stream")
    with av.open(str(folder / "song_with_cover.m4a"), "w", format="mp4") as container:   # a song and its cover art
        audio_stream = container.add_stream("aac", rate=RATE, layout="mono")
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24")
        samples = av.AudioFrame.from_ndarray(noise(5)[None], format="flt", layout="mono")
        samples.sample_rate, samples.pts = RATE, 0
        for packet in [*cover.encode(picture), *cover.encode(None), *audio_stream.encode(samples),
                       *audio_stream.encode(None)]:
            container.mux(packet)
    (folder / "song_with_cover.m4a").rename(folder / "song_with_cover.mp4")
    add("song_with_cover.mp4", "no video stream")
    write_audio_clip(noise(5), RATE, folder / "sound.wav")
    (folder / "sound.wav").rename(folder / "sound_wav.mov")
    add("sound_wav.mov", "no video stream")
    mux(folder / "half_second.mp4", seconds=0.5)
    add("half_second.mp4", "shorter than 3.75 s (0.50 s)")
    mux(folder / "three_seconds.webm", seconds=3.0, video_codec="libvpx-vp9", audio_codec="libopus",
        audio_rate=48_000)
    add("three_seconds.webm", "shorter than 3.75 s")
    mux(folder / "silent.mp4", audio="zeros")
    add("silent.mp4", "silent audio track")
    mux(folder / "whisper.mkv", audio="whisper", audio_codec="pcm_f32le")
    add("whisper.mkv", "silent audio track")
    mux(folder / "nan_audio.mkv", audio="nan", audio_codec="pcm_f32le")   # float PCM can hold NaN
    add("nan_audio.mkv", "audio has NaN samples")
    mux(folder / "tiny_frames.mp4", size=(16, 16))
    add("tiny_frames.mp4", "smaller than 32 pixels")
    # One 48-megapixel frame (a decompression bomb for the decoder); the header alone must refuse it.
    mux(folder / "huge.mkv", size=(6000, 8000), frames=1, video_codec="mjpeg")
    add("huge.mkv", "megapixel limit")
    (folder / "webm_head.webm").write_bytes(  # headers, hardly any data
        (folder / "good.webm").read_bytes()[:600])
    add("webm_head.webm", "video and audio streams decode to nothing")
    mux(folder / "cut_tail.webm", seconds=8, video_codec="libvpx-vp9", audio_codec="libopus", audio_rate=48_000,
        seed=7)
    whole = (folder / "cut_tail.webm").read_bytes()           # its header still says 8 s; ~2.7 s decode
    (folder / "cut_tail.webm").write_bytes(whole[: len(whole) // 3])
    add("cut_tail.webm", "where both audio and video decode")
    return broken


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_media")
    broken = make_corpus(root / "videos")
    (root / "videos" / "notes.txt").write_text("not a video suffix: never looked at")
    report = ingest(root / "videos", root / "data", workers=2, progress=False)
    return root, broken, report


def test_corpus_is_at_least_twenty_broken_inputs(corpus):
    _, broken, _ = corpus
    assert len(broken) >= 20


def test_every_broken_input_is_skipped_with_its_reason(corpus):
    _, broken, report = corpus
    reasons = {skip["path"]: skip["reason"] for skip in report.skipped}
    assert sorted(reasons) == sorted(broken)
    for name, expected in broken.items():
        assert expected in reasons[name], (name, reasons[name])
        assert "Traceback" not in reasons[name] and "unexpected" not in reasons[name]


def test_good_videos_are_kept_with_finite_features(corpus):
    root, _, report = corpus
    assert sorted(report.ingested) == sorted(GOOD)
    assert {w["path"] for w in report.warnings} == set(WARNED)
    for warning in report.warnings:
        assert WARNED[warning["path"]] in warning["warning"], warning
    # Only the part that decodes (about 6 of the 12 s) gives frames, each with a whole clip.
    cut = [r for r in dataset.load_manifest(root / "data") if r.video == "cut_half.webm"]
    assert len(cut) == 10 and max(r.time for r in cut) + 1.875 < 7.0
    records = dataset.load_manifest(root / "data")
    textures, spectrum = dataset.load_features(root / "data")
    assert len(records) == 10 * len(GOOD) == len(textures) == len(spectrum)
    assert np.isfinite(textures).all() and np.isfinite(spectrum).all()
    assert {r.video for r in records} == set(GOOD)
    on_disk = json.loads((root / "data" / dataset.REPORT).read_text())
    assert len(on_disk["skipped"]) == len(report.skipped)


def test_second_run_keeps_the_same_verdicts(corpus, tmp_path):
    root, broken, _ = corpus
    out = tmp_path / "data"
    shutil.copytree(root / "data", out)
    again = ingest(root / "videos", out, workers=1, progress=False)
    assert sorted(again.ingested) == sorted(GOOD)
    assert sorted(s["path"] for s in again.skipped) == sorted(broken)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"", None],
                         ids=["truncated", "zero-bytes", "deleted"])
def test_corrupt_jpeg_in_a_dataset_keeps_its_video_out_of_the_merge(corpus, tmp_path, damage):
    root, _, _ = corpus
    out = tmp_path / "data"
    shutil.copytree(root / "data", out)
    frame = out / "videos" / video_id("good.mp4") / "frame_03.jpg"
    if damage is None:
        frame.unlink()
    else:
        frame.write_bytes(damage(frame.read_bytes()))
    report = merge_videos(out)
    assert "good.mp4" not in report.ingested and len(report.ingested) == len(GOOD) - 1
    reason = {s["path"]: s["reason"] for s in report.skipped}["good.mp4"]
    assert "frame_03.jpg" in reason and "run ingest again" in reason
    assert len(dataset.load_manifest(out)) == 10 * (len(GOOD) - 1)


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_stops_ingest_without_marking_videos_skipped(tmp_path, monkeypatch):
    (tmp_path / "videos").mkdir()
    mux(tmp_path / "videos" / "a.mp4")
    monkeypatch.setattr(ingest_module, "write_audio_clip", _disk_full)
    with pytest.raises(OSError) as raised:
        ingest(tmp_path / "videos", tmp_path / "data", workers=1, progress=False)
    assert raised.value.errno == errno.ENOSPC
    # A skip record would stop the next run from retrying a video that is fine.
    assert not list((tmp_path / "data").rglob(SKIPPED_RECORD))

    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "videos"), "--out", str(tmp_path / "data"),
                                      "-j", "1", "--no-progress"])
    assert result.exit_code == 1
    assert "No space left on device" in result.output and "run the same command again" in result.output
    assert "Traceback" not in result.output
