"""Listening to an image (every account): a run's prediction for an uploaded image or a frame of its pool
(model/predict.py), with the units' labels as this account may see them and the clips of the top sound
clusters; uploads checked and bounded per account; the predicted sound synthesised in the background.

Uploads are hostile until checked: the body is bounded by its Content-Length before it is read
(backend/app/main.py BodyLimit), the file name may not carry path parts, the image's pixels are counted
from its header before anything is decoded, and nothing is written to disk (the bytes stay in memory).
Predictions run in worker threads, at most `predict_at_once` at a time, one at a time per network (its
Grad-CAM hook is the network's own); syntheses in a small pool of their own, one per account.
"""
from __future__ import annotations

import io
import secrets
import threading
import time
import wave
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import numpy as np
import plotly.graph_objects as go
from limits import RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.campaign import Visibility
from backend.app.errors import TaskError
from backend.app.media_files import dataset_file
from backend.app.results import run_report
from backend.config import Settings
from backend.db.models import Dataset, Frame, Run, SoundCluster
from model.decode import DecodeLimits, DecodeWorkers
from model.settings import TEXTURE

if TYPE_CHECKING:
    from model import predict as pr

CLIPS_PER_CLUSTER = 3
CLUSTERS_WITH_CLIPS = 3
POOL_FRAMES = 12              # frames of the pool offered to pick from
PREDICTIONS_KEPT = 200        # predicted textures kept for the synthesise button, oldest forgotten first
JOBS_KEPT = 100


# --- Labels of the units

def human_unit_labels(db: Session, run: Run, layer: str, shown: Visibility | None = None) -> dict[int, str | None]:
    """Each unit's label from the database: the people's verdict when it is a detector, else the automatic
    label; None for a unit ``shown`` hides (blind annotators see neither, backend/app/campaign.py)."""
    labels: dict[int, str | None] = {}
    for row in run_report(db, run).units:
        if row.layer != layer:
            continue
        labels[row.index] = None if shown is not None and not shown.shows(row.unit_id) else \
            (row.human_label or row.auto_category)
    return labels


def database_unit_labels(url: str | None, run_dir: Path, layer: str) -> dict[int, str]:
    """The human verdicts of RUN_DIR's units in the database at ``url`` (default: the server's), for
    `ambient predict`; {} when that database does not exist, cannot be opened or has not this run."""
    from sqlalchemy.engine import make_url

    from backend.db.session import open_db, session_factory

    url = url or Settings().database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).is_file()):
        return {}       # opening it would create an empty database
    try:
        with session_factory(open_db(url))() as db:
            run = db.scalar(select(Run).where(Run.run_dir == str(Path(run_dir).resolve())))
            if run is None:
                return {}
            return {index: row.human_label for row in run_report(db, run).units
                    if row.layer == layer and row.human_label for index in [row.index]}
    except Exception:      # noqa: BLE001: the labels are extra; the prediction does not need the database
        return {}


# --- Uploads

class UploadGuard:
    """Per-account bounds on predictions: requests a minute and uploaded bytes an hour (`limits`)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.per_minute = RateLimitItemPerMinute(settings.predict_per_minute)
        self.bytes_per_hour = RateLimitItemPerHour(settings.predict_bytes_per_hour)
        self.limiter = MovingWindowRateLimiter(storage_from_string(settings.predict_limits_storage))

    def _refuse(self, item, key: str, account: int, what: str) -> None:
        reset = self.limiter.get_window_stats(item, key, str(account)).reset_time
        wait = max(1, int(reset - time.time()) + 1)
        raise TaskError(f"Too many {what}: try again in {wait} s.", 429, {"Retry-After": str(wait)})

    def request(self, account: int) -> None:
        """Count a prediction; 429 past `predict_per_minute`."""
        if not self.limiter.hit(self.per_minute, "predict", str(account)):
            self._refuse(self.per_minute, "predict", account,
                         f"predictions (at most {self.settings.predict_per_minute} a minute)")

    def upload(self, account: int, size: int) -> None:
        """Count an upload's bytes; 429 past `predict_bytes_per_hour`."""
        if not self.limiter.hit(self.bytes_per_hour, "upload", str(account), cost=max(1, size)):
            self._refuse(self.bytes_per_hour, "upload", account,
                         f"uploaded bytes (at most {self.settings.predict_bytes_per_hour // 2**20} MiB an hour)")


def checked_file_name(name: str | None) -> str:
    """The upload's file name, for messages; 422 for one with path parts (browsers send the bare name)."""
    name = name or "upload"
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or len(name) > 255:
        raise TaskError(f"The file name {name[:80]!r} has path parts (or is not a plain name): send the file "
                        f"under its own name only.", 422)
    return name


# --- Predictions

def decode_workers(settings: Settings, workers: int) -> DecodeWorkers:
    """Processes that decode untrusted images within the settings' bounds (the server's, and `ambient predict`'s)."""
    return DecodeWorkers(workers, DecodeLimits(settings.predict_max_pixels, settings.predict_max_jpeg_scans,
                                               settings.predict_decode_seconds, settings.predict_decode_memory_bytes))


@dataclass
class LoadedNetwork:
    predictor: pr.Predictor
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Listening:
    """One app's prediction and synthesis state (app.state.listening)."""

    settings: Settings
    guard: UploadGuard
    limiter: anyio.CapacityLimiter
    networks: OrderedDict = field(default_factory=OrderedDict)      # (run_dir, model file mtime) -> LoadedNetwork
    networks_lock: threading.Lock = field(default_factory=threading.Lock)
    predictions: OrderedDict = field(default_factory=OrderedDict)   # key -> (account, run id, texture)
    jobs: OrderedDict = field(default_factory=OrderedDict)          # job id -> SynthesisJob
    jobs_lock: threading.Lock = field(default_factory=threading.Lock)
    executor: ThreadPoolExecutor | None = None
    decoder: DecodeWorkers | None = None     # the images' decoding processes; the app's lifespan closes them

    @classmethod
    def of(cls, settings: Settings) -> "Listening":
        return cls(settings, UploadGuard(settings), anyio.CapacityLimiter(settings.predict_at_once),
                   executor=ThreadPoolExecutor(max_workers=settings.synthesis_at_once,
                                               thread_name_prefix="synthesis"),
                   decoder=decode_workers(settings, settings.predict_at_once))

    def network(self, run: Run) -> LoadedNetwork:
        """The run's network, loaded once (again when its files change); 409 when it is not on this server.

        Only the model files recorded when the run was published are loaded, each inside the data roots and
        with its recorded SHA-256 (its bytes are read once, hashed and loaded from memory: model/modelfiles.py)."""
        run_dir = Path(run.run_dir)
        refused = f"Run {run.name}'s network cannot be loaded on this server"
        if run.model_files is None:
            raise TaskError(f"{refused}: the run was published before the SHA-256 of its model files was "
                            f"recorded; publish the run again (ambient publish RUN_DIR)", 409)
        roots = self.settings.allowed_roots()
        for path in run.model_files:
            if not any(Path(path).resolve().is_relative_to(root) for root in roots):
                raise TaskError(f"{refused}: its model file {path} lies outside the data roots "
                                f"(AMBIENT_DATA_ROOTS)", 409)
        stamp = tuple(p.stat().st_mtime_ns for p in sorted(run_dir.glob("*.pt")) + sorted(run_dir.glob("units_*.npz")))
        key = (str(run_dir), stamp, tuple(_file_stamp(Path(path)) for path in sorted(run.model_files)))
        with self.networks_lock:
            if key not in self.networks:
                from model import predict as pr      # torch: loaded with the first prediction, not at start-up
                try:
                    predictor = pr.load_predictor(run_dir, digests=run.model_files)
                except (FileNotFoundError, ValueError) as error:
                    raise TaskError(f"{refused}: {error}", 409) from None
                self.networks[key] = LoadedNetwork(predictor)
                while len(self.networks) > 2:          # a CaffeNet is ~250 MB: keep the two latest
                    self.networks.popitem(last=False)
            return self.networks[key]

    def remember(self, account: int, run_id: int, texture: np.ndarray | None) -> str | None:
        if texture is None:
            return None
        key = secrets.token_urlsafe(12)
        with self.jobs_lock:
            self.predictions[key] = (account, run_id, texture)
            while len(self.predictions) > PREDICTIONS_KEPT:
                self.predictions.popitem(last=False)
        return key


def _file_stamp(path: Path) -> tuple:
    """A model file's (path, mtime, size): a changed file is loaded (and its digest checked) again."""
    try:
        status = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), status.st_mtime_ns, status.st_size)


@dataclass
class Listened:
    """A prediction as the page and the API show it."""

    run: Run
    source: str                       # the file name or "frame N"
    labels: list[dict]
    units: list[dict]                 # with "url": the unit's page, where the run has that layer published
    target: str | None
    heatmap_png: bytes
    texture: list[float] | None
    texture_source: str
    clusters: list[dict]              # top sound clusters: {"label", "probability", "clips": [{"frame", "clip_url", "image_url"}]}
    prediction: str | None            # key for the synthesise button


def _clusters(db: Session, run: Run, labels: list[dict]) -> list[dict]:
    by_name = {row.name: row for row in db.scalars(select(SoundCluster).where(SoundCluster.run_id == run.id))}
    shown = []
    for label in labels[:CLUSTERS_WITH_CLIPS]:
        row = by_name.get(label["label"])
        if row is None:
            continue
        shown.append({**label, "clips": [{"frame": fid, "clip_url": f"/frames/{fid}/clip", "image_url": f"/frames/{fid}/image"}
                                for fid in list(row.closest_frame_ids)[:CLIPS_PER_CLUSTER]]})
    return shown


def listen(listening: Listening, db: Session, run_id: int, account: int, shown: Visibility, data: bytes,
           source: str) -> Listened:
    """Predict for an image's bytes (run in a worker thread: it runs the network, reads the database). The
    image is decoded in one of `listening.decoder`'s processes, killed at the deadline: a hostile file costs
    a few seconds of one CPU at most, and a 422 naming it."""
    from model import predict as pr
    run = db.get(Run, run_id)
    if run is None:
        raise TaskError(f"There is no run {run_id}.", 404)
    loaded = listening.network(run)
    predictor = loaded.predictor
    try:
        frame = pr.frame_tensor(listening.decoder.frame(data, source, predictor.frame_size))
    except pr.BadImage as error:
        raise TaskError(str(error), 422) from None
    with loaded.lock:
        (result,) = pr.predict(predictor, frame[None])
    labels = human_unit_labels(db, run, predictor.layer_name, shown)
    units = []
    for unit in result.units:
        published = unit["unit"] in labels
        # A unit not in the database has only RUN_DIR's automatic label: shown to those who may see every unit's.
        label = labels.get(unit["unit"]) if published else unit["label"] if shown.everything else None
        units.append({**unit, "label": label,
                      "url": f"/runs/{run.id}/units/{unit['layer']}/{unit['unit']}" if published else None})
    return Listened(run, source, result.labels, units, result.target,
                    pr.png_bytes(pr.heatmap_overlay(result.crop, result.heatmap)),
                    None if result.texture is None else result.texture.tolist(), result.texture_source,
                    _clusters(db, run, result.labels), listening.remember(account, run.id, result.texture))


def pool_frame(db: Session, run: Run, frame_id: int) -> tuple[bytes, str]:
    """A frame of the run's pool (its dataset): its image bytes and name."""
    row = db.execute(select(Dataset.data_dir, Frame.image_path).join(Frame, Frame.dataset_id == Dataset.id)
                     .where(Frame.id == frame_id, Frame.dataset_id == run.dataset_id)).one_or_none()
    if row is None:
        raise TaskError(f"Run {run.name}'s pool has no frame {frame_id}.", 404)
    path = dataset_file(row[0], row[1])
    if path is None:
        raise TaskError(f"The image of frame {frame_id} is missing.", 404)
    return path.read_bytes(), f"frame {frame_id}"


def pool_frames(db: Session, run: Run, count: int = POOL_FRAMES) -> list[Frame]:
    """Frames of the run's pool to pick from: test frames first, one per video where it can."""
    frames = db.scalars(select(Frame).where(Frame.dataset_id == run.dataset_id)
                        .order_by(Frame.split != "test", Frame.video_id, Frame.row).limit(count * 10)).all()
    picked, videos = [], set()
    for frame in frames:
        if frame.video_id is None or frame.video_id not in videos:
            videos.add(frame.video_id)
            picked.append(frame)
    return (picked + [f for f in frames if f not in picked])[:count]


def labels_figure(listened: Listened) -> go.Figure:
    """The label probabilities, best at the top."""
    rows = listened.labels[::-1]
    figure = go.Figure(go.Bar(x=[r["probability"] for r in rows], y=[r["label"] for r in rows], orientation="h",
                              marker_color="#0b6bcb", text=[f"{r['probability']:.2f}" for r in rows],
                              textposition="auto"))
    figure.update_layout(height=60 + 30 * len(rows), margin={"t": 10, "b": 40, "l": 120, "r": 10},
                         xaxis={"title": "probability", "range": [0, 1]})
    return figure


# --- Synthesis in the background

@dataclass
class SynthesisJob:
    id: str
    account: int
    state: str = "queued"           # queued, running, done, failed
    done: int = 0
    total: int = 0
    wav: bytes | None = None
    error: str | None = None

    def record(self) -> dict:
        return {"id": self.id, "state": self.state, "done": self.done, "total": self.total, "error": self.error,
                "audio_url": f"/listen/synthesis/{self.id}/audio.wav" if self.state == "done" else None}


def wav_bytes(waveform: np.ndarray, rate: int) -> bytes:
    """16-bit mono WAV in memory (nothing on disk); scaled down only where its peak would clip."""
    peak = float(np.abs(waveform).max(initial=0.0))
    samples = (waveform / peak if peak > 1 else waveform) * 32767
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1), file.setsampwidth(2), file.setframerate(rate)
        file.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def start_synthesis(listening: Listening, account: int, prediction: str) -> SynthesisJob:
    """Queue the synthesis of a prediction's texture; 404 for an unknown (or another account's) prediction,
    429 while the account has one unfinished, 503 when the queue is full."""
    with listening.jobs_lock:
        remembered = listening.predictions.get(prediction)
        if remembered is None or remembered[0] != account:
            raise TaskError("That prediction is not known (any more): predict again, then synthesise.", 404)
        unfinished = [job for job in listening.jobs.values() if job.state in ("queued", "running")]
        if any(job.account == account for job in unfinished):
            raise TaskError("You have a synthesis under way: wait for it to finish.", 429, {"Retry-After": "5"})
        if len(unfinished) >= listening.settings.synthesis_queue:
            raise TaskError("The server is synthesising for others: try again in a minute.", 503,
                            {"Retry-After": "60"})
        job = SynthesisJob(secrets.token_urlsafe(12), account)
        listening.jobs[job.id] = job
        while len(listening.jobs) > JOBS_KEPT:
            oldest = next(iter(listening.jobs))
            if listening.jobs[oldest].state in ("queued", "running"):
                break
            listening.jobs.pop(oldest)
    texture = remembered[2]
    listening.executor.submit(_synthesize, job, texture, listening.settings.synthesis_seconds)
    return job


def _synthesize(job: SynthesisJob, texture: np.ndarray, seconds: float) -> None:
    job.state = "running"

    def progress(done: int, total: int) -> None:
        job.done, job.total = done, total

    try:
        from model.synthesis import synthesize

        waveform = synthesize(texture, seconds=seconds, seed=0, progress=progress)
        job.wav = wav_bytes(np.asarray(waveform, np.float64), TEXTURE.sample_rate)
        job.state = "done"
    except Exception as error:     # noqa: BLE001: the job says what went wrong; the server goes on
        job.error, job.state = f"{type(error).__name__}: {error}", "failed"


def synthesis_job(listening: Listening, account: int, job_id: str) -> SynthesisJob:
    job = listening.jobs.get(job_id)
    if job is None or job.account != account:
        raise TaskError(f"There is no synthesis {job_id[:40]!r} of yours.", 404)
    return job
