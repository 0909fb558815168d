"""Ingest: videos -> 10 frames each, their 3.75 s clips, sound textures and spectra (see model/data/dataset.py).

Each video is processed on its own into ``videos/<id>/`` (``video.json`` last = finished), so runs
resume, shards can run on many machines, and ``merge`` joins whatever is finished into the manifest.
"""
from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.data import dataset
from model.data.media import (MediaError, StreamSpans, probe, read_audio_clips, read_frames, resize_center_crop,
                              stream_spans, write_audio_clip)
from model.settings import INGEST, MEDIA_LIMITS, TEXTURE, VIDEO_SUFFIXES, IngestSettings
from model.sound.texture import N_CHANNELS, TEXTURE_DIM, clip_features, resolve_device

VIDEO_RECORD = "video.json"
SKIPPED_RECORD = "skipped.json"     # a video that could not be used, with its reason
FEATURES = "features.npz"
# The disk, not the video, is at fault: stop the run instead of recording every later video as skipped.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


@dataclass
class IngestReport:
    videos_dir: str | None
    ingested: list[str] = field(default_factory=list)     # video paths relative to videos_dir
    skipped: list[dict] = field(default_factory=list)     # {"path", "reason"}
    frames: int = 0
    warnings: list[dict] = field(default_factory=list)    # {"path", "warning"}: ingested, but worth a look


class SkipVideo(Exception):
    """The video is unusable for a reason worth reporting (not a bug)."""


def video_id(relative_path: str) -> str:
    """Stable, readable id: a slug of the relative path plus a short hash (slugs can collide)."""
    slug = re.sub(r"[^a-z0-9]+", "-", Path(relative_path).with_suffix("").as_posix().lower()).strip("-")
    return f"{slug[-40:].lstrip('-') or 'video'}-{hashlib.sha1(relative_path.encode()).hexdigest()[:8]}"


def split_of(vid: str, test_fraction: float = INGEST.test_fraction) -> str:
    """Deterministic train/test split by video (a hash, so adding videos never moves old ones)."""
    unit = int(hashlib.sha1(f"split:{vid}".encode()).hexdigest()[:8], 16) / 2**32
    return "test" if unit < test_fraction else "train"


def frame_times(start: float, end: float, count: int = INGEST.frames_per_video,
                clip_seconds: float = TEXTURE.clip_seconds) -> np.ndarray:
    """Evenly spaced frame times in [start, end] (the span both streams cover), each with a full clip around it."""
    half = clip_seconds / 2
    return np.linspace(start + half, end - half, count)


def _cut_short(spans: StreamSpans) -> list[str]:
    """One line per stream whose data ends well before the end its header promises.

    A stream with a duration of its own is held to it; one without (Matroska, WebM) only to the
    file's, and only when no stream reaches that: streams of different lengths are no sign of a cut.
    """
    lines = []
    reached = max(spans.video.end, spans.audio.end)
    for kind, span, own, error in (("video", spans.video, spans.promised_video_end, spans.video_error),
                                   ("audio", spans.audio, spans.promised_audio_end, spans.audio_error)):
        promised, end = (own, span.end) if own is not None else (spans.promised_end, reached)
        if promised is not None and promised - end > MEDIA_LIMITS.max_short_of_header_s:
            lines.append(f"{kind} decodes to {span.end:.2f} s of the {promised:.2f} s its header promises "
                         + (f"(corrupt or cut short from there: {error})" if error else "(file cut short?)"))
    return lines


def _too_little(spans: StreamSpans, clip_seconds: float) -> str:
    """Why a video has no clip_seconds in which both streams decode."""
    a, v, both = spans.audio, spans.video, spans.both
    where = f"audio {a.start:.2f}-{a.end:.2f} s, video {v.start:.2f}-{v.end:.2f} s"
    reason = (f"audio and video do not overlap ({where})" if both.seconds == 0 else
              f"only {both.seconds:.2f} s where both audio and video decode ({where}); need {clip_seconds} s")
    return "; ".join([reason, *_cut_short(spans)])


def find_videos(videos_dir: Path) -> list[str]:
    """Relative paths of video files under videos_dir, recursively, sorted (the shard order)."""
    return sorted(p.relative_to(videos_dir).as_posix() for p in videos_dir.rglob("*")
                  if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def ingest_video(videos_dir: Path, relative_path: str, out_dir: Path,
                 settings: IngestSettings = INGEST) -> tuple[int, list[str]]:
    """Write one video's frames, clips and features into out_dir/videos/<id>/; returns (frames written,
    warnings).

    Frames are placed in the span where the decoded video and the decoded default audio track both
    exist, on the file's timeline, so each clip is the sound around its frame whatever the streams'
    start times, edit lists and encoder priming. Raises SkipVideo for corrupt files, no audio or
    video, less than a clip where both decode, frames too big or too small (MEDIA_LIMITS), audio
    with NaN samples, or a silent track. A file that decodes to much less than its header promises
    is ingested for the part that decodes, with a warning.
    """
    path = videos_dir / relative_path
    vid = video_id(relative_path)
    clip_seconds = TEXTURE.clip_seconds
    try:
        info = probe(path)
        if not info.has_video:
            raise SkipVideo("no video stream")
        if not info.has_audio:
            raise SkipVideo("no audio stream")
        if info.duration < clip_seconds:
            raise SkipVideo(f"shorter than {clip_seconds} s ({info.duration:.2f} s)")
        if info.width * info.height > MEDIA_LIMITS.max_video_pixels:
            raise SkipVideo(f"frames of {info.width}x{info.height} are over the "
                            f"{MEDIA_LIMITS.max_video_pixels / 1e6:.0f}-megapixel limit")
        if min(info.width, info.height) < MEDIA_LIMITS.min_video_side:
            raise SkipVideo(f"frames of {info.width}x{info.height} are smaller than "
                            f"{MEDIA_LIMITS.min_video_side} pixels a side")
        spans = stream_spans(path)
        both = spans.both
        if both.seconds < clip_seconds:
            raise SkipVideo(_too_little(spans, clip_seconds))
        warnings = [f"{line}; ingested {both.start:.2f}-{both.end:.2f} s" for line in _cut_short(spans)]
        times = frame_times(both.start, both.end, settings.frames_per_video, clip_seconds)
        clips, rate = read_audio_clips(path, [float(t) - clip_seconds / 2 for t in times], clip_seconds)
        for t, clip in zip(times, clips):
            # Audio that stops inside the span found above is missing data, not silence to pad.
            if len(clip) < (clip_seconds - MEDIA_LIMITS.max_missing_audio_s) * rate:
                raise SkipVideo(f"audio ends at {t - clip_seconds / 2 + len(clip) / rate:.2f} s, before the "
                                f"clip around {t:.2f} s (file cut short?)")
        images = read_frames(path, [float(t) for t in times])
    except MediaError as e:
        raise SkipVideo(e.reason) from e
    # Float PCM can carry NaN: it would turn every texture statistic into NaN and poison textures.npy.
    if not all(np.isfinite(c).all() for c in clips):
        raise SkipVideo("audio has NaN samples")
    # The last clip can end a few samples early when the audio stream is shorter than the video.
    length = round(clip_seconds * rate)
    clips = np.stack([np.pad(c[:length], (0, length - len(c[:length]))) for c in clips])
    device = resolve_device(settings.device)
    # spectrum at each clip's middle = the frame
    textures, spectrum, silent = clip_features(clips, rate, torch_device=None if device == "cpu" else device)
    if silent.all():
        raise SkipVideo("silent audio track")

    video_dir = out_dir / "videos" / vid
    video_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (t, image, clip) in enumerate(zip(times, images, clips)):
        image_name, clip_name = f"frame_{i:02d}.jpg", f"clip_{i:02d}.{settings.clip_format}"
        resize_center_crop(image.convert("RGB"), settings.frame_size).save(
            video_dir / image_name, quality=settings.jpeg_quality)
        write_audio_clip(clip, rate, video_dir / clip_name, out_rate=settings.clip_sample_rate)
        frames.append(dict(video_id=vid, video=relative_path, frame_index=i, time=round(float(t), 4),
                           image=f"videos/{vid}/{image_name}", clip=f"videos/{vid}/{clip_name}",
                           split=split_of(vid, settings.test_fraction), silent=bool(silent[i])))
    np.savez(video_dir / FEATURES, textures=textures.astype(np.float32),
             spectrum=spectrum.astype(np.float32), silent=silent)
    (video_dir / SKIPPED_RECORD).unlink(missing_ok=True)
    dataset.write_json_atomic(video_dir / VIDEO_RECORD, dict(
        video_id=vid, video=relative_path, videos_dir=str(videos_dir.resolve()),
        duration=info.duration, sample_rate=rate, frames=frames, warnings=warnings))
    return len(frames), warnings


def _ingest_one(videos_dir: Path, relative_path: str, out_dir: Path,
                settings: IngestSettings) -> tuple[str, int, str | None, list[str]]:
    """Worker: (path, frames, skip reason or None, warnings). Skips are recorded on disk for merge."""
    try:
        frames, warnings = ingest_video(videos_dir, relative_path, out_dir, settings)
        return relative_path, frames, None, warnings
    except SkipVideo as e:
        reason = str(e)
    except Exception as e:   # noqa: BLE001 - one odd file must not end a many-hour run; it is reported
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            raise
        reason = f"unexpected {type(e).__name__}: {e}"
    skip_dir = out_dir / "videos" / video_id(relative_path)
    skip_dir.mkdir(parents=True, exist_ok=True)
    dataset.write_json_atomic(skip_dir / SKIPPED_RECORD, dict(
        video=relative_path, videos_dir=str(videos_dir.resolve()), reason=reason,
        file=_file_stamp(videos_dir / relative_path)))
    return relative_path, 0, reason, []


def _file_stamp(path: Path) -> list[int]:
    """Size and mtime: a skipped video is retried only once its file has changed."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _previous_skip(videos_dir: Path, relative_path: str, out_dir: Path) -> str | None:
    """The reason this unchanged file was skipped before, if it was."""
    record = out_dir / "videos" / video_id(relative_path) / SKIPPED_RECORD
    if not record.exists():
        return None
    skip = json.loads(record.read_text())
    return skip["reason"] if skip["file"] == _file_stamp(videos_dir / relative_path) else None


def _broken_frame(out_dir: Path, frames: list[dict]) -> str | None:
    """Why one of a finished video's frame JPEGs is unusable (missing, empty, cut short), or None.

    Start and end markers only: they catch truncated or zeroed copies at the cost of two small
    reads per frame, where decoding every frame would make a 200,000-frame merge take minutes.
    """
    for frame in frames:
        path = out_dir / frame["image"]
        try:
            with path.open("rb") as file:
                head = file.read(2)
                file.seek(max(0, path.stat().st_size - 2))
                tail = file.read(2)
        except OSError:
            return f"{frame['image']} is missing"
        if head != b"\xff\xd8" or tail != b"\xff\xd9":
            return f"{frame['image']} is not a complete JPEG"
    return None


def merge_videos(out_dir: str | Path) -> IngestReport:
    """Join every finished video dir into manifest.jsonl, textures.npy, spectrum.npy, ingest_report.json."""
    out_dir = Path(out_dir)
    video_dirs = sorted((out_dir / "videos").glob("*/")) if (out_dir / "videos").is_dir() else []
    records, textures, spectrum, report = [], [], [], IngestReport(videos_dir=None)
    for video_dir in video_dirs:
        done, skipped = video_dir / VIDEO_RECORD, video_dir / SKIPPED_RECORD
        if done.exists():
            video = json.loads(done.read_text())
            broken = _broken_frame(out_dir, video["frames"])
            if broken is not None:
                # A damaged dataset copy: training would crash on the frame, so its video stays out.
                report.skipped.append(dict(path=video["video"], reason=f"{broken}; delete {video_dir} "
                                                                      "and run ingest again to redo it"))
                continue
            features = np.load(video_dir / FEATURES)
            textures.append(features["textures"])
            spectrum.append(features["spectrum"])
            for frame in video["frames"]:
                records.append(dataset.FrameRecord(frame_id=len(records), **frame))
            report.ingested.append(video["video"])
            report.warnings.extend(dict(path=video["video"], warning=w) for w in video.get("warnings", []))
            report.videos_dir = report.videos_dir or video["videos_dir"]
        elif skipped.exists():
            skip = json.loads(skipped.read_text())
            report.skipped.append(dict(path=skip["video"], reason=skip["reason"]))
            report.videos_dir = report.videos_dir or skip["videos_dir"]
    report.frames = len(records)
    report.ingested.sort()
    dataset.write_manifest(out_dir, records,
                           np.concatenate(textures) if textures else np.zeros((0, TEXTURE_DIM)),
                           np.concatenate(spectrum) if spectrum else np.zeros((0, N_CHANNELS)))
    dataset.write_json_atomic(out_dir / dataset.REPORT, asdict(report))
    return report


def ingest(videos_dir: str | Path | None, out_dir: str | Path, workers: int | None = None,
           shard: tuple[int, int] | None = None, merge: bool = False, progress: bool = True,
           settings: IngestSettings = INGEST, ray_address: str | None = None) -> IngestReport:
    """Ingest every video under videos_dir into out_dir, in parallel and resumably.

    With `shard=(i, n)` only videos whose sorted index is i mod n are processed and the manifest is
    not written (run with `merge=True` once all shards are done); the report then covers this shard
    only. Without a shard the finished set is merged at the end. `merge=True` only merges.
    With `ray_address` the videos are ingested by tasks on that Ray cluster (model/engine.py; out_dir
    on storage every node sees): the same per-video function, so the same files, and the same merge.
    """
    out_dir = Path(out_dir)
    if merge:
        return merge_videos(out_dir)
    videos_dir = Path(videos_dir)
    if ray_address is not None:
        from model.engine import on_cluster

        with on_cluster(ray_address):    # joined before anything is written: a dead address writes nothing
            return _ingest(videos_dir, out_dir, workers, shard, progress, settings, on_ray=True)
    return _ingest(videos_dir, out_dir, workers, shard, progress, settings, on_ray=False)


def _ingest(videos_dir: Path, out_dir: Path, workers: int | None, shard: tuple[int, int] | None,
            progress: bool, settings: IngestSettings, on_ray: bool) -> IngestReport:
    relative_paths = find_videos(videos_dir)
    if shard is not None:
        index, count = shard
        relative_paths = relative_paths[index::count]
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    done = {p for p in relative_paths if (out_dir / "videos" / video_id(p) / VIDEO_RECORD).exists()}
    skipped_before = {p: r for p in relative_paths if p not in done
                      and (r := _previous_skip(videos_dir, p, out_dir)) is not None}
    todo = [p for p in relative_paths if p not in done and p not in skipped_before]
    report = IngestReport(videos_dir=str(videos_dir.resolve()), ingested=sorted(done))
    report.frames = settings.frames_per_video * len(done)
    bar = tqdm(total=len(relative_paths), initial=len(relative_paths) - len(todo), desc="ingest",
               unit="video", disable=not progress)
    results = [(p, 0, reason, []) for p, reason in skipped_before.items()]
    if on_ray:
        from model.engine import map_on_cluster

        # Textures on the nodes' CPUs unless a GPU was asked for: a task then holds a share of one.
        gpus = 0.25 if settings.device == "cuda" else 0
        for _index, result in map_on_cluster(_ingest_one, ((videos_dir, p, out_dir, settings) for p in todo),
                                             num_gpus=gpus):
            results.append(result)
            bar.update()
    elif (workers or 0) == 1 or len(todo) <= 1:
        for p in todo:
            results.append(_ingest_one(videos_dir, p, out_dir, settings))
            bar.update()
    else:
        # Never a plain fork: a child forked from a process with threads (a test runner's servers, torch's or
        # FFmpeg's pools) can inherit a held lock and hang in read_frames; CUDA needs spawn.
        context = multiprocessing.get_context("spawn" if settings.device == "cuda" else "forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_ingest_one, videos_dir, p, out_dir, settings) for p in todo]
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    for path, frames, reason, warnings in sorted(results, key=lambda result: result[0]):
        report.warnings.extend(dict(path=path, warning=w) for w in warnings)
        if reason is None:
            report.ingested.append(path)
            report.frames += frames
        else:
            report.skipped.append(dict(path=path, reason=reason))
    report.ingested.sort()
    if shard is None:
        return merge_videos(out_dir)
    return report
