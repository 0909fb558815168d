"""Listening to an image (every account): a run's prediction for an uploaded image or a frame of its pool
(model/units/predict.py), with the units' labels as this account may see them and the clips of the top sound
clusters; uploads checked and bounded per account; the predicted sound synthesised in the background.

Uploads are hostile until checked: the body is bounded by its Content-Length before it is read
(backend/app/main.py BodyLimit) and parsed only once the session or token is known good, the file name may
not carry path parts, the image's pixels are counted from its header before anything is decoded, and nothing
is written to disk: the body and the image's bytes stay in memory (backend/app/routes/listen.py upload_form).
Predictions run in worker threads, at most `predict_at_once` at a time over all the server's processes, one
at a time per network (its Grad-CAM hook is the network's own); syntheses in threads of their own, one per
account. The limits, the remembered predictions and the synthesis jobs live in the database
(backend/app/listen_limits.py), so that they hold across uvicorn workers.
"""
from __future__ import annotations

import io
import threading
import wave
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import plotly.graph_objects as go
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.app.campaign import Visibility
from backend.app.clusters import cluster_title
from backend.app.errors import TaskError
from backend.app.listen_limits import (PredictionSlots, UploadGuard, finish, job_record, progress_writer,
                                       queue_synthesis, remember_prediction, wait_to_run)
from backend.app.media_files import dataset_file
from backend.app.results import default_report
from backend.config import Settings
from backend.data_roots import is_inside
from backend.db.models import Dataset, Frame, Run, SoundCluster, Video
from model.data.decode import DecodeLimits, DecodeWorkers
from model.settings import TEXTURE

if TYPE_CHECKING:
    import numpy as np      # imported where used: the app answers its first page without it (tests/test_layout.py)

    from model.units import predict as pr

CLIPS_PER_CLUSTER = 3
CLUSTERS_WITH_CLIPS = 3
POOL_FRAMES = 12              # frames of the pool offered to pick from


# --- Labels of the units

def human_unit_labels(db: Session, run: Run, layer: str, shown: Visibility | None = None) -> dict[int, str | None]:
    """Each unit's label from the database: the people's verdict when it is a detector, else the automatic
    label; None for a unit ``shown`` hides (blind annotators see neither, backend/app/campaign.py)."""
    labels: dict[int, str | None] = {}
    for row in default_report(db, run).units:
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
            return {index: row.human_label for row in default_report(db, run).units
                    if row.layer == layer and row.human_label for index in [row.index]}
    except Exception:      # noqa: BLE001: the labels are extra; the prediction does not need the database
        return {}


# --- Uploads

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
    sessions: sessionmaker
    guard: UploadGuard
    slots: PredictionSlots                # over all processes
    limiter: anyio.CapacityLimiter        # this process's threads waiting for or holding a slot
    networks: OrderedDict = field(default_factory=OrderedDict)      # (run_dir, model file mtime) -> LoadedNetwork
    networks_lock: threading.Lock = field(default_factory=threading.Lock)
    executor: ThreadPoolExecutor | None = None
    decoder: DecodeWorkers | None = None     # the images' decoding processes; the app's lifespan closes them

    @classmethod
    def of(cls, settings: Settings, sessions: sessionmaker) -> "Listening":
        # A thread for every job the queue admits: a queued job waits (and beats) in its own thread.
        return cls(settings, sessions, UploadGuard(settings, sessions), PredictionSlots(settings, sessions),
                   anyio.CapacityLimiter(settings.predict_at_once),
                   executor=ThreadPoolExecutor(max_workers=settings.synthesis_queue, thread_name_prefix="synthesis"),
                   decoder=decode_workers(settings, settings.predict_at_once))

    def network(self, run: Run) -> LoadedNetwork:
        """The run's network, loaded once (again when its files change); 409 when it is not on this server.

        Only the model files recorded when the run was published are loaded, each inside the data roots and
        with its recorded SHA-256 (its bytes are read once, hashed and loaded from memory: model/network/modelfiles.py)."""
        run_dir = Path(run.run_dir)
        refused = f"Run {run.name}'s network cannot be loaded on this server"
        if run.model_files is None:
            raise TaskError(f"{refused}: the run was published before the SHA-256 of its model files was "
                            f"recorded; publish the run again (ambient publish RUN_DIR)", 409)
        roots = self.settings.allowed_roots()
        for path in run.model_files:
            if not is_inside(path, roots):
                raise TaskError(f"{refused}: its model file {path} lies outside the data roots "
                                f"(AMBIENT_DATA_ROOTS)", 409)
        stamp = tuple(p.stat().st_mtime_ns for p in sorted(run_dir.glob("*.pt")) + sorted(run_dir.glob("units_*.npz")))
        key = (str(run_dir), stamp, tuple(_file_stamp(Path(path)) for path in sorted(run.model_files)))
        with self.networks_lock:
            if key not in self.networks:
                from model.units import predict as pr  # torch: loaded with the first prediction, not at start-up
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
        return remember_prediction(self.sessions, account, run_id, texture)


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
    # top sound clusters: {"label", "title", "probability", "clips": [{"frame", "clip_url", "image_url"}]}
    clusters: list[dict]
    prediction: str | None            # key for the synthesise button
    truth_png: bytes | None = None    # a pool frame of a generated world: the crop with the truth's outlines


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
           source: str, frame_id: int | None = None) -> Listened:
    """Predict for an image's bytes (run in a worker thread: it runs the network, reads the database). The
    image is decoded in one of `listening.decoder`'s processes, killed at the deadline: a hostile file costs
    a few seconds of one CPU at most, and a 422 naming it. ``frame_id``: the pool frame the bytes are, whose
    truth outline is shown beside the heatmap when the run's data comes from a generated world."""
    from model.units import predict as pr
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
    # Each sound label with what it is (its cluster's title: "Cluster 3: traffic 62%, crowd 20%").
    titles = {row.name: cluster_title(row.name, row.given_name, row.description)
              for row in db.scalars(select(SoundCluster).where(SoundCluster.run_id == run.id))}
    labels = [{**label, "title": titles.get(label["label"], label["label"])} for label in result.labels]
    return Listened(run, source, labels, units, result.target,
                    pr.png_bytes(pr.heatmap_overlay(result.crop, result.heatmap)),
                    None if result.texture is None else result.texture.tolist(), result.texture_source,
                    _clusters(db, run, labels), listening.remember(account, run.id, result.texture),
                    None if frame_id is None else frame_truth_png(listening.settings.allowed_roots(), db, run, frame_id,
                                                                  predictor, result.crop))


def frame_truth_png(roots: list[Path], db: Session, run: Run, frame_id: int, predictor, crop: np.ndarray
                    ) -> bytes | None:
    """A pool frame's crop as the network saw it, the objects heard at that moment outlined in green and the
    silent ones in white (model/units/localize.py); None where the run's data is not from a generated world
    inside the data roots, or its truth of that video is not there."""
    from model.units.localize import crop_truth, truth_outline
    from model.units.predict import png_bytes
    from model.world.truth import frame_truth, world_of_data

    row = db.execute(select(Dataset.data_dir, Video.path, Frame.time).join(Frame, Frame.dataset_id == Dataset.id)
                     .join(Video, Frame.video_id == Video.id)
                     .where(Frame.id == frame_id, Frame.dataset_id == run.dataset_id)).one_or_none()
    if row is None:
        return None
    world = world_of_data(row.data_dir)
    if world is None or not is_inside(world, roots):
        return None
    try:
        truth = crop_truth(frame_truth(world, row.path, row.time), predictor.frame_size, predictor.input_size)
    except (OSError, ValueError, KeyError):
        return None
    return png_bytes(truth_outline(crop, truth.sources, truth.silent))


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
    figure = go.Figure(go.Bar(x=[r["probability"] for r in rows], y=[r["title"] for r in rows], orientation="h",
                              marker_color="#0b6bcb", text=[f"{r['probability']:.2f}" for r in rows],
                              textposition="auto"))
    figure.update_layout(height=60 + 30 * len(rows), margin={"t": 10, "b": 40, "l": 120, "r": 10},
                         xaxis={"title": "probability", "range": [0, 1]}, yaxis={"automargin": True})
    return figure


# --- Synthesis in the background

def wav_bytes(waveform: np.ndarray, rate: int) -> bytes:
    """16-bit mono WAV in memory (nothing on disk); scaled down only where its peak would clip."""
    import numpy as np

    peak = float(np.abs(waveform).max(initial=0.0))
    samples = (waveform / peak if peak > 1 else waveform) * 32767
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1), file.setsampwidth(2), file.setframerate(rate)
        file.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def start_synthesis(listening: Listening, account: int, prediction: str) -> dict:
    """Queue the synthesis of a prediction's texture in this process; its record (backend/app/listen_limits.py
    queue_synthesis says what is refused)."""
    job, texture = queue_synthesis(listening.settings, listening.sessions, account, prediction)
    listening.executor.submit(_synthesize, listening, job.id, texture)
    return job_record(job)


def _synthesize(listening: Listening, job_id: str, texture: np.ndarray) -> None:
    sessions = listening.sessions
    try:
        if not wait_to_run(listening.settings, sessions, job_id):
            return
        import numpy as np

        from model.sound.synthesis import synthesize

        waveform = synthesize(texture, seconds=listening.settings.synthesis_seconds, seed=0,
                              progress=progress_writer(sessions, job_id))
        finish(sessions, job_id, state="done", wav=wav_bytes(np.asarray(waveform, np.float64), TEXTURE.sample_rate))
    except Exception as error:     # noqa: BLE001: the job says what went wrong; the server goes on
        finish(sessions, job_id, state="failed", error=f"{type(error).__name__}: {error}")
