"""Sound in sync with the frame: generated videos flash and click at the same known times, under every
kind of offset between the streams; the flash frame's stored clip has the click at its middle.

`write_flash_click` is also the quirk corpus's generator (tests/test_media_quirks.py).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from model.data import dataset
from model.data.ingest import frame_times, ingest
from model.data.media import read_audio
from model.settings import INGEST, TEXTURE

FPS = 30
TICKS = Fraction(1, 600)          # frame times and durations are whole numbers of these (20 = 1/30 s)
HALF = TEXTURE.clip_seconds / 2
SYNC_TOLERANCE_S = 0.02           # the bound: the click within 20 ms of the clip's middle
# Three frames a video, not ingest's ten: the first and last clips reach the ends of the span where both streams
# decode, where late starts, short audio, priming and edit lists would show, and the middle one the spacing
# between them; fewer clips make the corpora quick to ingest (ten a video: tests/test_ingest.py).
SETTINGS = replace(INGEST, frames_per_video=3)


@dataclass(frozen=True)
class Quirk:
    """One generated video: containers, codecs and the ways real files differ from the plain case."""

    suffix: str = ".mp4"
    video_codec: str = "libx264"
    audio_codec: str = "aac"
    rate: int = 22_050
    layout: str = "mono"
    video_start: float = 0.0          # seconds on the file's timeline
    audio_start: float = 0.0
    video_seconds: float = 5.0
    audio_seconds: float = 5.0
    frame_ticks: tuple[int, ...] = (20,)   # durations cycled through, in TICKS (20 = 1/30 s); more than one: VFR
    rotation: int = 0                 # display rotation, counterclockwise degrees (a phone held upright: -90)
    sample_aspect: Fraction | None = None
    decoy_track: bool = False         # a first, non-default audio track that clicks at other times
    muxer_options: dict = field(default_factory=dict)
    bframes: bool = True


def _upright_image(flash: bool, height: int = 64, width: int = 48) -> np.ndarray:
    """Upright portrait picture: red top half, blue bottom half; green only in flash frames."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, :, 0] = 200
    image[height // 2:, :, 2] = 200
    image[..., 1] = 255 if flash else 0
    return image


def _stored_image(quirk: Quirk, flash: bool) -> np.ndarray:
    """What the encoder gets: the upright picture turned so that the display rotation turns it back;
    with non-square pixels, squeezed so that stretching by the aspect ratio restores it."""
    image = np.rot90(_upright_image(flash), k=-quirk.rotation // 90)
    if quirk.sample_aspect is not None:
        height, width = image.shape[:2]
        image = np.asarray(Image.fromarray(image).resize((round(width / quirk.sample_aspect), height)))
    return np.ascontiguousarray(image)


def _frames(quirk: Quirk) -> list[tuple[int, int]]:
    """(pts, duration) of every frame in TICKS."""
    frames, pts = [], round(quirk.video_start / TICKS)
    end = round((quirk.video_start + quirk.video_seconds) / TICKS)
    while pts < end:
        duration = quirk.frame_ticks[len(frames) % len(quirk.frame_ticks)]
        frames.append((pts, duration))
        pts += duration
    return frames


def _waveform(quirk: Quirk, events: list[float], seed: int) -> np.ndarray:
    """Quiet noise with a 5 ms 2 kHz click at each event time (times on the file's timeline)."""
    rate = quirk.rate
    wave = 0.02 * np.random.default_rng(seed).standard_normal(round(quirk.audio_seconds * rate))
    burst = 0.9 * np.sin(2 * np.pi * 2000 * np.arange(round(0.005 * rate)) / rate)
    for event in events:
        first = round((event - quirk.audio_start) * rate)
        if 0 <= first < wave.size - burst.size:
            wave[first:first + burst.size] = burst
    return wave.astype(np.float32)


def _audio_packets(container, quirk: Quirk, events: list[float], seed: int, default: bool):
    stream = container.add_stream(quirk.audio_codec, rate=quirk.rate, layout=quirk.layout)
    if quirk.audio_codec == "vorbis":
        stream.codec_context.options = {"strict": "experimental"}     # FFmpeg's own Vorbis encoder
    stream.disposition = av.stream.Disposition.default if default else av.stream.Disposition(0)
    channels = av.AudioLayout(quirk.layout).nb_channels
    frame = av.AudioFrame.from_ndarray(np.tile(_waveform(quirk, events, seed), (channels, 1)), format="fltp",
                                       layout=quirk.layout)
    frame.sample_rate, frame.time_base = quirk.rate, Fraction(1, quirk.rate)
    frame.pts = round(quirk.audio_start * quirk.rate)
    return stream, [*stream.encode(frame), *stream.encode(None)]


def write_flash_click(path: Path, quirk: Quirk, events: list[float]) -> None:
    """A video whose frame covering each event time flashes green and whose default audio clicks then."""
    with av.open(str(path), "w", options=quirk.muxer_options) as container:
        video = container.add_stream(quirk.video_codec, rate=FPS)
        video.height, video.width = _stored_image(quirk, False).shape[:2]
        video.pix_fmt = "yuv420p"
        # Constant frame rate in 1/FPS units, as AVI (no timestamps, one tick a frame) needs; VFR in TICKS.
        time_base = TICKS if len(quirk.frame_ticks) > 1 else Fraction(1, FPS)
        video.codec_context.time_base = time_base
        if quirk.video_codec == "libx264" and not quirk.bframes:
            video.codec_context.options = {"bf": "0"}
        if quirk.rotation:
            video.set_display_rotation(quirk.rotation)
        if quirk.sample_aspect is not None:
            video.codec_context.sample_aspect_ratio = quirk.sample_aspect
        packets = []
        if quirk.decoy_track:
            _, decoy = _audio_packets(container, quirk, [e + 0.5 for e in events], seed=1, default=False)
            packets += decoy
        _, audio = _audio_packets(container, quirk, events, seed=0, default=True)
        packets += audio
        images = {flash: _stored_image(quirk, flash) for flash in (False, True)}
        for pts, duration in _frames(quirk):
            covers = any(pts * TICKS <= e < (pts + duration) * TICKS for e in events)
            frame = av.VideoFrame.from_ndarray(images[covers], format="rgb24")
            frame.pts, frame.duration = int(pts * TICKS / time_base), int(duration * TICKS / time_base)
            frame.time_base = time_base
            packets += video.encode(frame)
        packets += video.encode(None)
        for packet in sorted(packets, key=lambda p: float((p.dts if p.dts is not None else p.pts) * p.time_base)):
            container.mux(packet)


def decoded_span(path: Path) -> tuple[float, float]:
    """The oracle: decode every frame of both streams and intersect where they have data."""
    starts, ends = [], []
    for kind in ("video", "audio"):
        with av.open(str(path)) as container:
            audio = container.streams.audio      # the default track; Ogg and AVI mark none: the first
            stream = (container.streams.video[0] if kind == "video" else
                      next((s for s in audio if s.disposition & av.stream.Disposition.default), audio[0]))
            frame_seconds = 1 / float(stream.average_rate or FPS) if kind == "video" else 0.0   # AVI frames say 0
            times = [(f.time, float(f.duration * f.time_base) or frame_seconds if kind == "video"
                      else f.samples / f.sample_rate) for f in container.decode(stream)]
            own_end = (float((stream.duration + stream.start_time) * stream.time_base)
                       if stream.duration is not None else np.inf)    # an MP4 edit list's end trims padding
        starts.append(times[0][0])
        ends.append(min(max(t + d for t, d in times), own_end))
    return max(starts), min(ends)


def write_case(folder: Path, name: str, quirk: Quirk) -> np.ndarray:
    """Write the case's video with its events at the frame times ingest should choose; returns them."""
    path = folder / f"{name}{quirk.suffix}"
    write_flash_click(path, quirk, [])                   # the structure alone fixes where both streams decode
    times = frame_times(*decoded_span(path), SETTINGS.frames_per_video)
    write_flash_click(path, quirk, list(times))
    return times


def click_times(clip: np.ndarray, rate: int) -> np.ndarray:
    """Centres of the clicks in a clip (each a run of loud 5 ms windows), in seconds from its start."""
    window = max(1, round(0.005 * rate))
    energy = np.convolve(clip.astype(np.float64) ** 2, np.ones(window), mode="same")
    loud = energy > 0.2 * energy.max()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    return np.array([(a + np.argmax(energy[a:b])) / rate for a, b in zip(edges[::2], edges[1::2])])


def assert_in_sync(data_dir: Path, video: str, times: np.ndarray) -> None:
    """Every stored frame of `video` is its flash frame, upright, and its clip clicks at its middle."""
    records = [r for r in dataset.load_manifest(data_dir) if r.video == video]
    assert len(records) == SETTINGS.frames_per_video, video
    np.testing.assert_allclose([r.time for r in records], times, atol=0.005, err_msg=video)
    for record in records:
        image = np.asarray(Image.open(data_dir / record.image).convert("RGB"), dtype=float)
        assert image[..., 1].mean() > 128, f"{video} frame {record.frame_index} at {record.time} s is not the flash"
        top, bottom = image[:96], image[-96:]
        assert top[..., 0].mean() > bottom[..., 0].mean() + 60, f"{video}: frame not upright"
        assert bottom[..., 2].mean() > top[..., 2].mean() + 60, f"{video}: frame not upright"
        clip, rate = read_audio(data_dir / record.clip)
        assert len(clip) == pytest.approx(TEXTURE.clip_seconds * rate, abs=2)
        # Neighbouring frames' clicks are >= 0.13 s away, so only this frame's click can be this close.
        offset = min(click_times(clip, rate) - HALF, key=abs)
        assert abs(offset) <= SYNC_TOLERANCE_S, (
            f"{video} frame {record.frame_index}: nearest click {offset:+.3f} s from the clip's middle")


OFFSETS = {
    "plain_mp4": Quirk(),
    "both_start_late_mkv": Quirk(suffix=".mkv", video_start=10.0, audio_start=10.0),
    "both_start_late_mp4": Quirk(video_start=3.0, audio_start=3.0),
    "audio_before_video_mp4": Quirk(video_start=0.5),                    # an edit list delays the video
    "audio_after_video_mp4": Quirk(audio_start=0.4),                     # ... or the audio
    "audio_before_video_mkv": Quirk(suffix=".mkv", video_start=0.7, audio_start=0.2),
    "audio_after_video_webm": Quirk(suffix=".webm", video_codec="libvpx-vp9", audio_codec="libopus",
                                    rate=48_000, audio_start=0.3),
    "audio_after_video_mov_pcm": Quirk(suffix=".mov", audio_codec="pcm_s16le", audio_start=0.25),
}


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sync")
    (folder / "videos").mkdir()
    # Two videos at a time: PyAV encodes and decodes without holding the GIL.
    with ThreadPoolExecutor(2) as pool:
        times = dict(zip((f"{name}{quirk.suffix}" for name, quirk in OFFSETS.items()),
                         pool.map(lambda case: write_case(folder / "videos", *case), OFFSETS.items())))
    report = ingest(folder / "videos", folder / "data", workers=2, progress=False, settings=SETTINGS)
    return folder / "data", times, report


def test_every_offset_case_is_ingested_without_warnings(synced):
    _, times, report = synced
    assert report.skipped == [] and report.warnings == []
    assert sorted(report.ingested) == sorted(times)


@pytest.mark.parametrize("video", [f"{name}{quirk.suffix}" for name, quirk in OFFSETS.items()])
def test_flash_frame_clip_has_the_click_at_its_middle(synced, video):
    data_dir, times, _ = synced
    assert_in_sync(data_dir, video, times[video])
