"""Decoding and encoding media with PyAV: audio, video frames, probing, 256x256 crops, browser clips."""
from __future__ import annotations

import ctypes
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
# Audio timestamps that disagree with the sample count by more than this mark a repeat or a gap
# (well above Matroska's 1 ms rounding and AVI's jitter; repeats and gaps are whole frames, ~20-70 ms).
_RESYNC_S = 0.01
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
    duration: float          # seconds; the longest stream's end, as the header says
    width: int               # coded frame size; 0 without a video stream
    height: int
    fps: float               # 0.0 without a video stream
    has_audio: bool
    has_video: bool
    audio_rate: int          # of the default audio track; 0 without an audio stream


@dataclass(frozen=True)
class Span:
    """Seconds on the file's timeline (its timestamps, which need not start at 0)."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class StreamSpans:
    """Where the video and the default audio track really have data, and what the header promises."""

    video: Span
    audio: Span
    promised_video_end: float | None     # the stream's own duration in the header; None: it has none
    promised_audio_end: float | None
    promised_end: float | None           # the whole file's, as the header says
    video_error: str | None = None       # why reading the stream's data stopped early, if it did
    audio_error: str | None = None

    @property
    def both(self) -> Span:
        """The span in which decoded audio and decoded video both exist."""
        return Span(max(self.video.start, self.audio.start), min(self.video.end, self.audio.end))


def _open(path: str | Path) -> av.container.InputContainer:
    if not Path(path).is_file():
        raise MediaError(path, "no such file")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise MediaError(path, f"cannot be opened ({e.__class__.__name__}: {e})") from e


def _video_stream(container) -> av.video.stream.VideoStream | None:
    """The first video stream that is footage, not an attached cover picture."""
    return next((s for s in container.streams.video
                 if not s.disposition & av.stream.Disposition.attached_pic), None)


def _audio_stream(container) -> av.audio.stream.AudioStream | None:
    """The default audio track (a player's choice), else the first."""
    streams = container.streams.audio
    return next((s for s in streams if s.disposition & av.stream.Disposition.default),
                streams[0] if streams else None)


def probe(path: str | Path) -> VideoInfo:
    with _open(path) as container:
        video, audio = _video_stream(container), _audio_stream(container)
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


def _stream_end(stream) -> float | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return float((stream.duration + (stream.start_time or 0)) * stream.time_base)


def _duration(container) -> float | None:
    ends = [end for s in container.streams if (end := _stream_end(s)) is not None]
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


def _container_end(container) -> float | None:
    """The file's end as the header says."""
    if container.duration is None:
        return None
    # Muxers disagree whether the duration counts from 0 (Matroska, MP4) or from the start time
    # (MPEG-TS); the smaller reading never reports a whole file as cut short.
    end = container.duration / av.time_base
    start = (container.start_time or 0) / av.time_base
    return end + start if end <= start else end


def _first_times(path, container, video, audio) -> tuple[float, float]:
    """Time of the first decoded video frame and the first decoded audio sample (one pass from the start)."""
    first: dict[int, float] = {}
    try:
        for packet in container.demux(video, audio):
            if packet.stream.index in first:
                continue
            for frame in packet.decode():
                if frame.time is not None:
                    first[packet.stream.index] = frame.time
                    break
            if len(first) == 2:
                break
    except av.FFmpegError as e:
        raise MediaError(path, f"corrupt data at the start ({e})") from e
    missing = [s.type for s in (video, audio) if s.index not in first]
    if missing:
        raise MediaError(path, f"{' and '.join(missing)} stream{'s' * (len(missing) - 1)} decode"
                               f"{'s' * (len(missing) == 1)} to nothing")
    return first[video.index], first[audio.index]


def _packet_seconds(packet, stream) -> float:
    if packet.duration:
        return float(packet.duration * packet.time_base)
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.0


def _seek(container, stream, seconds: float) -> None:
    """Seek `stream` to the last keyframe at or before `seconds` on its timeline, dropping what the
    decoder still holds from before (PyAV does not flush it: a stale frame would carry an old time)."""
    container.seek(max(0, int(seconds / stream.time_base)), stream=stream, backward=True)
    stream.codec_context.flush_buffers()


def _data_end(container, stream, from_time: float | None) -> tuple[float | None, str | None]:
    """(End of the stream's last frame, the error that stopped reading or None), read from `from_time`
    on (None: from the start).

    Video: packet timestamps (demuxing only: a frame is a packet, and decoding a long GOP is the
    slow part of reading a video). Audio: decoded frames, so priming and padding the decoder drops
    are not counted. Data that stops being readable (corrupt, or a file cut short) ends the stream there.
    """
    _seek(container, stream, from_time or 0.0)
    end, error = None, None
    try:
        for packet in container.demux(stream):
            if stream.type == "audio":
                for frame in packet.decode():
                    if frame.time is not None:
                        end = max(end or 0.0, frame.time + frame.samples / frame.sample_rate)
            elif packet.pts is not None and not packet.is_corrupt:
                end = max(end or 0.0, float(packet.pts * packet.time_base) + _packet_seconds(packet, stream))
    except av.FFmpegError as e:
        error = f"{e.__class__.__name__}: {e.strerror or e}"
    return end, error


def stream_spans(path: str | Path) -> StreamSpans:
    """Where the video stream and the default audio track have decodable data.

    The starts come from the first decoded frames, the ends from the last ones, found by seeking
    to a few seconds before the end the header promises (so a long file is not read through); only
    when nothing is found there (a file cut short) is the stream read from the start.
    """
    with _open(path) as container:
        video, audio = _video_stream(container), _audio_stream(container)
        if video is None:
            raise MediaError(path, "no video stream")
        if audio is None:
            raise MediaError(path, "no audio stream")
        video_start, audio_start = _first_times(path, container, video, audio)
        own = {s.index: _stream_end(s) for s in (video, audio)}
        file_end = _container_end(container)
        ends, errors = {}, {}
        for stream, start in ((video, video_start), (audio, audio_start)):
            tail = own[stream.index] if own[stream.index] is not None else file_end
            end = error = None
            if tail is not None:
                try:
                    end, error = _data_end(container, stream, max(start, tail - MEDIA_LIMITS.tail_seek_s))
                except av.FFmpegError:
                    end = None     # no index to seek with (e.g. a WebM cut before its cues)
            if end is None or end <= start:
                try:
                    end, error = _data_end(container, stream, None)
                except av.FFmpegError as e:
                    raise MediaError(path, f"{stream.type} stream cannot be read from its start ({e})") from e
            if end is not None and own[stream.index] is not None:
                end = min(end, own[stream.index])      # an MP4 edit list trims the encoder's padding at the end
            ends[stream.index], errors[stream.index] = (end if end is not None else start), error
        return StreamSpans(video=Span(video_start, ends[video.index]), audio=Span(audio_start, ends[audio.index]),
                           promised_video_end=own[video.index], promised_audio_end=own[audio.index],
                           promised_end=file_end, video_error=errors[video.index], audio_error=errors[audio.index])


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


def _read_waveform(path, container, stream, start: float | None, duration: float | None) -> np.ndarray:
    """Mono samples of `stream` from `start` s on its timeline (None: its first sample) for
    `duration` s (None: to the end).

    Samples are placed by a running count from the first decoded frame's timestamp (not from the
    stream's first packet: AAC/MP3/Opus pad the start, so sample 0 of the stream is not time 0),
    re-anchored on a frame whose timestamp disagrees with the count by more than _RESYNC_S: audio
    already placed is dropped (Ogg re-sends packets after a seek), a gap is filled with silence.
    """
    rate = stream.codec_context.sample_rate
    if start is not None:
        # Seek a little early (audio packets are all keyframes; the decoder needs a frame to settle) and trim.
        _seek(container, stream, start - 0.5)
    chunks, first_time, n_samples = [], None, 0
    try:
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            samples = _frame_samples(frame).mean(axis=0)   # every channel -> mono
            if first_time is None:
                first_time = frame.time
            drift = frame.time - (first_time + n_samples / rate)
            if drift < -_RESYNC_S:
                samples = samples[round(-drift * rate):]
            elif drift > _RESYNC_S:
                samples = np.concatenate([np.zeros(round(drift * rate), np.float32), samples])
            chunks.append(samples)
            n_samples += samples.size
            if duration is not None and first_time + n_samples / rate >= start + duration:
                break
    except av.FFmpegError as e:
        raise MediaError(path, f"corrupt audio ({e})") from e
    if not chunks:
        raise MediaError(path, "audio stream decodes to nothing")
    waveform = np.concatenate(chunks)
    start = first_time if start is None else start
    if first_time > start + 1.0 / rate:
        # The seek overshot (or the stream starts late): pad the gap with silence so
        # sample i is still time start + i / rate.
        waveform = np.concatenate([np.zeros(round((first_time - start) * rate), np.float32), waveform])
        first_time = start
    begin = round((start - first_time) * rate)
    end = None if duration is None else begin + round(duration * rate)
    return np.ascontiguousarray(waveform[begin:end], dtype=np.float32)


def read_audio(path: str | Path, start: float | None = None,
               duration: float | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 waveform in [-1, 1] of the default audio track and its sample rate, from
    `start` s (on the file's timeline; default: its first sample) for `duration` s."""
    clips, rate = read_audio_clips(path, [start], duration)
    return clips[0], rate


def read_audio_clips(path: str | Path, starts: list[float | None],
                     duration: float | None) -> tuple[list[np.ndarray], int]:
    """read_audio for several start times, opening the file once (each clip seeks)."""
    with _open(path) as container:
        stream = _audio_stream(container)
        if stream is None:
            raise MediaError(path, "no audio stream")
        rate = stream.codec_context.sample_rate
        clips = [_read_waveform(path, container, stream, start, duration) for start in starts]
    return clips, rate


def _upright(image: Image.Image, rotation: int, sample_aspect: float) -> Image.Image:
    """The frame as a player shows it: non-square pixels stretched to square, display rotation applied."""
    if sample_aspect and abs(sample_aspect - 1) > 1e-3:
        width, height = image.size
        size = (round(width * sample_aspect), height) if sample_aspect > 1 else (width, round(height / sample_aspect))
        image = image.resize(size, Image.Resampling.BICUBIC)
    # The display matrix turns the stored frame counterclockwise by `rotation` degrees (phones: -90 or 90).
    quarter_turns = round(rotation / 90) % 4
    if quarter_turns:
        image = image.transpose((None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                 Image.Transpose.ROTATE_270)[quarter_turns])
    return image


def read_frames(path: str | Path, times: list[float]) -> list[Image.Image]:
    """RGB images of the frames shown at each time (the last frame whose timestamp <= t), upright
    and with square pixels, as a player shows them."""
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(path, "no video stream")
        fps = float(stream.average_rate or 0)
        allowed_gap = max(MEDIA_LIMITS.max_frame_gap_s, 2 / fps if fps else 0)   # slideshows: 2 frames
        sample_aspect = float(stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio or 1)
        images: dict[float, Image.Image] = {}
        decoded, shown, upcoming = None, None, None    # decoder iterator, last frame <= t, first frame > t
        try:
            for t in sorted(set(times)):
                if upcoming is not None and upcoming.time is not None and upcoming.time <= t + 1e-6:
                    shown = upcoming
                if decoded is None or t - (shown.time or 0.0) > _SEEK_GAP_S:
                    _seek(container, stream, t)
                    decoded, shown = container.decode(stream), None
                upcoming = None
                for frame in decoded:
                    if shown is not None and frame.time is not None and frame.time > t + 1e-6:
                        upcoming = frame
                        break
                    if shown is None or frame.time is None or shown.time is None or frame.time >= shown.time:
                        shown = frame      # not a frame the demuxer sends again after a seek (Ogg)
                if shown is None:
                    raise MediaError(path, f"no video frame at {t:.3f} s")
                if shown.time is not None and t - shown.time > allowed_gap:
                    raise MediaError(path, f"no video frame near {t:.3f} s: frames stop at {shown.time:.3f} s "
                                           "(file cut short?)")
                images[t] = _upright(shown.to_image(), shown.rotation, sample_aspect)
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


def fill_fresh_memory(byte: int = 0x5A) -> bool:
    """Have glibc fill memory it hands out (and takes back) with ``byte``, for the rest of this process.

    libx264 (core 165, in PyAV's FFmpeg) reads memory it never wrote: the same frames, encoded with
    one thread, gave different files in processes whose heaps held different garbage (4 outcomes in
    12 processes), and ~4% of a generated world's videos differed between two runs. With the heap's
    fresh memory filled (glibc's M_PERTURB) all were identical. False where the C library has no mallopt.
    """
    try:
        return bool(ctypes.CDLL(None).mallopt(-6, byte))     # -6: M_PERTURB in glibc's malloc.h
    except (AttributeError, OSError):
        return False


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
        vstream.thread_count = 1       # x264's frame threads make the bytes depend on timing: reruns must match
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
