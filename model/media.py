"""Decoding and encoding media with PyAV: audio, video frames, probing, 256x256 crops, browser clips."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from model.settings import MEDIA_LIMITS

# Encoder per clip suffix; all of these play in every current browser (wav/flac/mp3/ogg-opus).
_AUDIO_ENCODERS = {".mp3": "mp3", ".ogg": "libopus", ".opus": "libopus", ".wav": "pcm_s16le",
                   ".flac": "flac"}
_OPUS_RATE = 48_000   # libopus only encodes at 8/12/16/24/48 kHz
_MP3_OPTIONS = {"compression_level": "7"}   # LAME's faster search: half the encode time, same bitrate
# read_frames decodes straight on to a frame less than this far ahead: cheaper than a seek back
# to a keyframe (x264's default GOP is 250 frames, so most seeks land far back).
_SEEK_GAP_S = 5.0
_VIDEO_ENCODERS = {".mp4": ("libx264", "aac"), ".mov": ("libx264", "aac"), ".mkv": ("libx264", "aac"),
                   ".webm": ("libvpx-vp9", "libopus"), ".avi": ("mpeg4", "mp3")}


class MediaError(Exception):
    """A file that cannot be used: corrupt, or missing the stream asked for."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    duration: float          # seconds; the longest stream's end
    width: int               # 0 without a video stream
    height: int
    fps: float               # 0.0 without a video stream
    has_audio: bool
    has_video: bool
    audio_rate: int          # 0 without an audio stream


def _open(path: str | Path) -> av.container.InputContainer:
    if not Path(path).is_file():
        raise MediaError(path, "no such file")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise MediaError(path, f"cannot be opened ({e.__class__.__name__}: {e})") from e


def probe(path: str | Path) -> VideoInfo:
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = _duration(container)
        if duration is None:
            # Some muxers (e.g. raw streams) record no duration: decode to the end to find it.
            duration = _decoded_duration(path)
        return VideoInfo(
            duration=duration,
            width=video.codec_context.width if video else 0,
            height=video.codec_context.height if video else 0,
            fps=float(video.average_rate or video.guessed_rate or 0) if video else 0.0,
            has_audio=audio is not None,
            has_video=video is not None,
            audio_rate=audio.codec_context.sample_rate if audio else 0,
        )


def _duration(container) -> float | None:
    ends = [float(s.duration * s.time_base) + float((s.start_time or 0) * s.time_base)
            for s in container.streams if s.duration is not None and s.time_base is not None]
    if ends:
        return max(ends)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _decoded_duration(path) -> float:
    end = 0.0
    with _open(path) as container:
        try:
            for frame in container.decode(*container.streams.audio, *container.streams.video):
                if frame.time is not None:
                    length = getattr(frame, "samples", 0) / (getattr(frame, "sample_rate", 0) or 1)
                    end = max(end, frame.time + length)
        except av.FFmpegError as e:
            raise MediaError(path, f"corrupt data ({e})") from e
    return end


def _frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """(channels, samples) float32 in [-1, 1] from any sample format FFmpeg decodes to."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T          # packed: interleaved in one row
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return np.clip(data.astype(np.float32), -1.0, 1.0)


def read_audio(path: str | Path, start: float | None = None,
               duration: float | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 waveform in [-1, 1] and its sample rate, from `start` s for `duration` s.

    Trimming uses each decoded frame's timestamp (not a running sample count) because
    AAC/MP3 pad the start: sample 0 of the stream is not time 0 of the video.
    """
    start = max(0.0, start or 0.0)
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        if start > 0:
            # Seek a little early (audio packets are all keyframes) and trim below.
            container.seek(max(0, int((start - 0.5) / stream.time_base)), stream=stream)
        chunks, first_time, n_samples = [], None, 0
        try:
            for frame in container.decode(stream):
                if first_time is None:
                    first_time = frame.time if frame.time is not None else 0.0
                chunks.append(_frame_samples(frame).mean(axis=0))   # stereo -> mono
                n_samples += frame.samples
                if duration is not None and first_time + n_samples / rate >= start + duration:
                    break
        except av.FFmpegError as e:
            raise MediaError(path, f"corrupt audio ({e})") from e
    if not chunks:
        raise MediaError(path, "audio stream decodes to nothing")
    waveform = np.concatenate(chunks)
    if first_time > start + 1.0 / rate:
        # The seek overshot (or the stream starts late): pad the gap with silence so
        # sample i is still time start + i / rate.
        waveform = np.concatenate([np.zeros(round((first_time - start) * rate), np.float32), waveform])
        first_time = start
    begin = round((start - first_time) * rate)
    end = None if duration is None else begin + round(duration * rate)
    return np.ascontiguousarray(waveform[begin:end], dtype=np.float32), rate


def read_frames(path: str | Path, times: list[float]) -> list[Image.Image]:
    """RGB images of the frames shown at each time (the last frame whose timestamp <= t)."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 0)
        allowed_gap = max(MEDIA_LIMITS.max_frame_gap_s, 2 / fps if fps else 0)   # slideshows: 2 frames
        images: dict[float, Image.Image] = {}
        decoded, shown, upcoming = None, None, None    # decoder iterator, last frame <= t, first frame > t
        try:
            for t in sorted(set(times)):
                if upcoming is not None and upcoming.time is not None and upcoming.time <= t + 1e-6:
                    shown = upcoming
                if decoded is None or t - (shown.time or 0.0) > _SEEK_GAP_S:
                    container.seek(max(0, int(t / stream.time_base)), stream=stream, backward=True)
                    decoded, shown = container.decode(stream), None
                upcoming = None
                for frame in decoded:
                    if shown is not None and frame.time is not None and frame.time > t + 1e-6:
                        upcoming = frame
                        break
                    shown = frame
                if shown is None:
                    raise MediaError(path, f"no video frame at {t:.3f} s")
                if shown.time is not None and t - shown.time > allowed_gap:
                    raise MediaError(path, f"no video frame near {t:.3f} s: frames stop at {shown.time:.3f} s "
                                           "(file cut short?)")
                images[t] = shown.to_image()
        except av.FFmpegError as e:
            raise MediaError(path, f"corrupt video ({e})") from e
    return [images[t] for t in times]


def resize_center_crop(image: Image.Image | np.ndarray, size: int = 256,
                       nearest: bool = False) -> Image.Image | np.ndarray:
    """Scale the short side to `size` and crop the centre square; arrays come back as arrays.

    Works on HxWx3 images and on 2-D masks (bool or integer; use nearest=True) with the
    same geometry, so a mask in video pixels lines up with the stored 256x256 frame.
    """
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    if isinstance(image, Image.Image):
        return ImageOps.fit(image, (size, size), method=method)
    array = np.asarray(image)
    is_bool = array.dtype == bool
    pil = Image.fromarray(array.astype(np.uint8) if is_bool else array)
    out = np.asarray(ImageOps.fit(pil, (size, size), method=method))
    return out.astype(bool) if is_bool else out.astype(array.dtype, copy=False)


def write_audio_clip(waveform: np.ndarray, sample_rate: int, path: str | Path,
                     out_rate: int | None = None) -> None:
    """Encode a mono waveform in [-1, 1] as a browser-playable file chosen by suffix (.mp3, .ogg,
    .wav, .flac), resampled to `out_rate` if given (mp3 only takes the usual 8-48 kHz rates)."""
    path = Path(path)
    codec = _AUDIO_ENCODERS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"{path}: unsupported clip format; use one of {sorted(_AUDIO_ENCODERS)}")
    samples = np.clip(np.asarray(waveform, dtype=np.float32).reshape(1, -1), -1.0, 1.0)
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = 0
    out_rate = _OPUS_RATE if codec == "libopus" else (out_rate or sample_rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=out_rate, layout="mono",
                                      options=_MP3_OPTIONS if codec == "mp3" else None)
        # PyAV's encoder resamples to the codec's rate/format and cuts codec-sized frames.
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_video(path: str | Path, frames: np.ndarray, fps: int,
                waveform: np.ndarray | None = None, sample_rate: int = 22_050) -> None:
    """Write (T, H, W, 3) uint8 frames (+ optional mono audio) to a file chosen by suffix.

    .mp4/.mov/.mkv get H.264 + AAC, .webm VP9 + Opus, .avi MPEG-4 + MP3. Used by the demo
    world, the tests and the benchmarks to make videos that go through ingest like a user's.
    """
    suffix = Path(path).suffix.lower()
    video_codec, audio_codec = _VIDEO_ENCODERS[suffix]
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(video_codec, rate=fps)
        vstream.height, vstream.width = frames.shape[1:3]
        vstream.pix_fmt = "yuv420p"
        astream = None
        if waveform is not None:
            rate = _OPUS_RATE if audio_codec == "libopus" else sample_rate
            astream = container.add_stream(audio_codec, rate=rate, layout="mono")
        for image in frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None:
            frame = av.AudioFrame.from_ndarray(
                np.clip(np.asarray(waveform, np.float32), -1, 1).reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, 0
            for packet in [*astream.encode(frame), *astream.encode(None)]:
                container.mux(packet)
