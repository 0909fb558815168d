"""The pipeline job queue: jobs are rows of the ``jobs`` table, and ``run_worker`` claims them one at a
time and runs each step as a child ``ambient`` process, so neither the web server nor the worker's
loop ever blocks on the work. One worker runs one job at a time: start one worker per GPU.

A job's steps are CLI commands from the pipeline plan (backend/pipeline.py, which ``ambient demo``
runs too), computed when the job starts from what is already on disk, so a failed or cancelled job
that is queued again resumes (training from its last checkpoint). Children get the database URL in
their environment (AMBIENT_DATABASE_URL), never on their command line.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from backend.config import JOBS, JobSettings, Settings
from backend.data_roots import OutsideRoots, check_dataset_paths, check_run_paths, link_message, roots_env
from backend.db.models import Job, Run, Worker
from backend.pipeline import DEMO, Step, demo_folders, plan, world_of
from model.data import dataset as ds
from model.device import DEVICE_CHOICES
from model.network.run import RUN_JSON, read_metrics, read_run_json
from model.settings import OBJECT_MODES, POOL_SPLITS, TRAIN_PRESETS, UNITS, VIDEO_SUFFIXES, WORLD_PRESETS

JOB_KINDS = ("demo", "world", "ingest", "labels", "train", "units", "dissect", "probe", "visualize")
# What a probe job fits its linear SVMs on (`ambient probe`): the run's generated world (--world), or a
# benchmark folder in one of `ambient probe --format`'s formats.
PROBE_BENCHMARKS = ("world", "voc2007", "imagefolder")

HOST = socket.gethostname()
_TQDM_PERCENT = re.compile(r"(\d{1,3})%\|")
# A training step's bars (model/data/frames.py, model/network/train.py): the frames decoded first, then the steps.
_DECODING_PERCENT = re.compile(r"decoding frames:\s*(\d{1,3})%\|")
_TRAINING_PERCENT = re.compile(r"training \([^)]*\):\s*(\d{1,3})%\|")
DECODING_SHARE = 0.1        # of a training step's progress: decoding its frames, before the first step


class JobError(Exception):
    """A job request that cannot be honoured. ``field`` is the request's field at fault (None: the request
    as a whole); ``str()`` names it (the API's message), ``reason`` says what is wrong without it (the job
    forms show it beside the field, under the field's own label)."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason, self.field = reason, field


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- Requests: the admin's fields -> a job's params (checked here, so the worker gets sound input).

def _choice(fields: dict, name: str, choices, default: str) -> str:
    value = str(fields.get(name) or default)
    if value not in choices:
        raise JobError(f"{value!r} is not one of {', '.join(choices)}", name)
    return value


# Each request field as the job forms name it, in their labels and in their errors.
FIELD_LABELS = {"kind": "Kind", "world_preset": "World", "objects": "Objects", "videos": "Videos", "seed": "Seed",
                "videos_dir": "Videos folder", "data_dir": "Dataset folder", "label_kind": "Labels", "k": "k",
                "preset": "Training preset", "epochs": "Epochs", "gpus": "GPUs", "device": "Device",
                "split": "Pool split", "run_dir": "Run folder", "benchmark": "Probe on",
                "dataset": "Benchmark folder"}

# The most a job's whole-number fields take: beyond these a job would run for ever or overflow.
INTEGER_MAX = {"videos": 100_000, "epochs": 1_000, "k": 1_000, "gpus": 64, "seed": 2**32 - 1, "keep_checkpoints": 100}


def _integer(fields: dict, name: str, default: int | None, low: int = 1) -> int | None:
    value = fields.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise JobError(f"{value!r} is not a whole number", name) from None
    if number < low:
        raise JobError(f"must be at least {low}", name)
    if number > INTEGER_MAX[name]:
        raise JobError(f"must be at most {INTEGER_MAX[name]:,}", name)
    return number


def checked_folder(fields: dict, name: str, must_contain: str | None = None, roots: list[Path] | None = None) -> str:
    """An absolute server path under one of ``roots`` (None: anywhere) that exists, is a readable folder,
    (optionally) holds ``must_contain``, and holds no link leading outside the roots."""
    value = str(fields.get(name) or "").strip()
    if not value:
        raise JobError("give a folder on the server", name)
    path = Path(value).expanduser()
    if roots is not None and not any(path.resolve().is_relative_to(root) for root in roots):
        raise JobError(f"{value} is outside the data roots ({', '.join(map(str, roots))}); "
                       f"set AMBIENT_DATA_ROOTS to allow other folders", name)
    if not path.exists():
        raise JobError(f"{value} does not exist on the server", name)
    if not path.is_dir():
        raise JobError(f"{value} is not a directory", name)
    if not os.access(path, os.R_OK | os.X_OK):
        raise JobError(f"{value} is not readable by the server", name)
    if must_contain and not (path / must_contain).exists():
        raise JobError(f"{value} has no {must_contain}", name)
    # What the job reads or writes inside must stay in the roots too: a link there could lead anywhere.
    leaving = ds.link_outside(path, roots) if roots is not None else None
    if leaving is not None:
        raise JobError(link_message(leaving, roots), name)
    return str(path.resolve())


def job_params(kind: str, fields: dict, roots: list[Path] | None = None) -> dict:
    """The params of a new ``kind`` job from form or JSON fields; raises JobError naming a bad field.
    Folders must lie under ``roots`` (the server's data roots; None: anywhere)."""
    if kind not in JOB_KINDS:
        raise JobError(f"{kind!r} is not one of {', '.join(JOB_KINDS)}", "kind")
    params: dict = {}
    if kind in ("demo", "world"):
        params["world_preset"] = _choice(fields, "world_preset", WORLD_PRESETS, DEMO["world_preset"])
        params["objects"] = _choice(fields, "objects", OBJECT_MODES, DEMO["objects"])
        params["videos"] = _integer(fields, "videos", DEMO["videos"])
        params["seed"] = _integer(fields, "seed", DEMO["seed"], low=0)
    if kind == "ingest":
        params["videos_dir"] = checked_folder(fields, "videos_dir", roots=roots)
    if kind in ("labels", "train"):
        params["data_dir"] = checked_folder(fields, "data_dir", ds.MANIFEST, roots)
    if kind in ("demo", "labels", "train"):
        params["label_kind"] = _choice(fields, "label_kind", ds.LABEL_KINDS, DEMO["label_kind"])
        params["k"] = _integer(fields, "k", DEMO["k"] if kind != "train" else None)
    if kind in ("demo", "train"):
        params["preset"] = _choice(fields, "preset", TRAIN_PRESETS, DEMO["preset"])
        params["epochs"] = _integer(fields, "epochs", DEMO["epochs"])
        params["keep_checkpoints"] = _integer(fields, "keep_checkpoints",
                                              DEMO["keep_checkpoints"] if kind == "demo" else None)
    if kind == "train":
        params["gpus"] = _integer(fields, "gpus", 1)     # > 1: DDP under torchrun, one process per GPU
    if kind in ("demo", "train", "units", "probe", "visualize"):
        device = str(fields.get("device") or DEMO["device"])
        # cuda:N picks one GPU of several; whether it exists is for the worker's machine to say.
        params["device"] = device if re.fullmatch(r"cuda:\d+", device) else \
            _choice(fields, "device", DEVICE_CHOICES, DEMO["device"])
    if kind in ("demo", "units", "train"):
        params["split"] = _choice(fields, "split", POOL_SPLITS, DEMO["split"] if kind == "demo" else UNITS.split)
    if kind in ("units", "dissect", "probe", "visualize"):
        params["run_dir"] = checked_folder(fields, "run_dir", roots=roots)
        _names_inside_roots(check_run_paths, params["run_dir"], "run_dir", roots)
    if kind == "probe":
        params.update(_probe_source(fields, params["run_dir"], roots))
    if kind == "units":
        pool = fields.get("data_dir") or _run_data_dir(Path(params["run_dir"]))
        params["data_dir"] = checked_folder({"data_dir": pool}, "data_dir", ds.MANIFEST, roots)
    if params.get("data_dir"):
        _names_inside_roots(check_dataset_paths, params["data_dir"], "data_dir", roots)
    return params


def _probe_source(fields: dict, run_dir: str, roots: list[Path] | None) -> dict:
    """What a probe job probes the run on: its generated world's held-out frames (the run's own dataset), or
    a benchmark folder."""
    benchmark = _choice(fields, "benchmark", PROBE_BENCHMARKS, "world")
    if benchmark != "world":
        return {"benchmark": benchmark, "dataset": checked_folder(fields, "dataset", roots=roots)}
    data_dir = checked_folder({"data_dir": _run_data_dir(Path(run_dir))}, "data_dir", ds.MANIFEST, roots)
    world_dir = world_of(data_dir)
    if world_dir is None or (roots is not None and not any(world_dir.resolve().is_relative_to(r) for r in roots)):
        raise JobError(f"the run's dataset ({data_dir}) was not ingested from a generated world under the data "
                       "roots: probe on a benchmark folder (voc2007 or imagefolder)", "benchmark")
    return {"benchmark": benchmark, "data_dir": data_dir, "world_dir": str(world_dir)}


def _names_inside_roots(check, folder: str, name: str, roots: list[Path] | None) -> None:
    """A run's or dataset's files may not name a path outside the roots (a pool, a network file, a videos
    folder): the job's steps would read it, and publishing would show it."""
    if roots is None:
        return
    try:
        check(folder, roots)
    except OutsideRoots as error:
        raise JobError(str(error), name) from None


# The job forms' lists of folders: how deep under each data root, and how many folders, are looked at.
FOLDER_SCAN_DEPTH = 4
FOLDER_SCAN_LIMIT = 2_000


@dataclass(frozen=True)
class DataFolders:
    """What lies under the data roots, newest first: the job forms offer these to pick from."""

    datasets: list[str]         # folders holding a manifest (ingested)
    runs: list[str]             # folders holding run.json (trained)
    videos: list[str]           # folders holding videos (to ingest)


def data_folders(roots: list[Path], depth: int = FOLDER_SCAN_DEPTH, limit: int = FOLDER_SCAN_LIMIT) -> DataFolders:
    """The datasets, runs and video folders under ``roots``, breadth first, at most ``depth`` folders deep and
    ``limit`` folders in all; not inside a dataset or run (their frames are many), through no link."""
    found: dict[str, list[Path]] = {"datasets": [], "runs": [], "videos": []}
    queue = deque((root, 0) for root in roots)
    looked = 0
    seen: set[Path] = set()       # one root may lie inside another: each folder is listed once
    while queue and looked < limit:
        folder, level = queue.popleft()
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        looked += 1
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue                    # unreadable or gone: the forms cannot use it either
        names = {entry.name for entry in entries}
        if ds.MANIFEST in names:
            found["datasets"].append(folder)
            continue
        if RUN_JSON in names:
            found["runs"].append(folder)
            continue
        if any(Path(entry.name).suffix.lower() in VIDEO_SUFFIXES for entry in entries):
            found["videos"].append(folder)
        if level < depth:
            queue.extend((Path(entry.path), level + 1) for entry in sorted(entries, key=lambda e: e.name)
                         if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False))

    def newest_first(folders: list[Path]) -> list[str]:
        return [str(f) for f in sorted(folders, key=lambda f: (-_mtime(f), str(f)))]
    return DataFolders(**{kind: newest_first(folders) for kind, folders in found.items()})


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _run_data_dir(run_dir: Path) -> str:
    try:
        return read_run_json(run_dir)["data_dir"]
    except (OSError, ValueError, KeyError):
        raise JobError(f"{run_dir} has no run.json naming its dataset: choose the pool dataset too",
                       "run_dir") from None


def create_job(db: Session, kind: str, fields: dict, roots: list[Path] | None = None) -> Job:
    """Queue a new job (committed); raises JobError for bad fields."""
    job = Job(kind=kind, params=job_params(kind, fields, roots), status="queued", progress=0.0, stage="",
              metrics=[], log="")
    db.add(job)
    db.commit()
    return job


# The share of the training split a label kind trains on: k-means labels keep the frames within the median
# distance of their centroid (model/sound/labels.py), the other kinds every training frame.
TRAINED_SHARE = {"cluster": 0.5, "texton": 0.5}


def training_warning(params: dict) -> str | None:
    """What to tell an admin whose train job would run fewer than FEW_STEPS steps, with advice its form can
    follow (None: enough data). A job given k makes its labels first: its frames are estimated from the split."""
    from dataclasses import replace

    from model.network.train import planned_steps
    from model.settings import FEW_STEPS

    settings = TRAIN_PRESETS[params["preset"]]
    if params.get("epochs"):
        settings = replace(settings, epochs=params["epochs"])
    about = ""
    if params.get("k"):
        train_rows = int((ds.load_splits(params["data_dir"]) == "train").sum())
        frames, about = int(train_rows * TRAINED_SHARE.get(params["label_kind"], 1.0)), "about "
    else:
        try:
            frames, _ = planned_steps(params["data_dir"], params["label_kind"], settings)
        except (FileNotFoundError, ValueError, KeyError):
            return None      # no labels and no k: the train step itself says what is missing
    per_epoch = frames // settings.batch_size
    steps = settings.epochs * per_epoch
    if settings.epochs == 0 or steps >= FEW_STEPS:
        return None
    needed = math.ceil(FEW_STEPS / max(1, per_epoch))
    epochs = (f"set Epochs to {needed}" if per_epoch and needed <= INTEGER_MAX["epochs"] else
              "no number of epochs is enough here")
    return (f"Too little data for the {params['preset']} preset: {steps} training steps on this data "
            f"({about}{frames} training frames / batch {settings.batch_size} x {settings.epochs} epochs), fewer "
            f"than about {FEW_STEPS}, so the network will barely learn. To fix it, {epochs}, or ingest more videos "
            f"into the dataset (each gives 10 frames, about half of them for training).")


def cancel_job(db: Session, job_id: int) -> bool:
    """Mark a queued or running job cancelled; its worker sees the mark and kills the child process."""
    changed = db.execute(update(Job).where(Job.id == job_id, Job.status.in_(("queued", "running")))
                         .values(status="cancelled", finished_at=utcnow())).rowcount
    db.commit()
    return bool(changed)


def requeue_job(db: Session, job_id: int) -> bool:
    """Queue a failed or cancelled job again: it resumes from what its steps left on disk."""
    job = db.get(Job, job_id)
    if job is None or job.status not in ("failed", "cancelled"):
        return False
    changed = db.execute(update(Job).where(Job.id == job_id, Job.status == job.status).values(
        status="queued", finished_at=None, pid=None, log=job.log + "\n--- queued again: resuming ---\n")).rowcount
    db.commit()
    return bool(changed)


def units_fields(job: Job) -> dict:
    """The fields of a unit-extraction job for a finished training job's run."""
    return {"run_dir": job.params.get("run_dir"), "data_dir": job.params.get("data_dir"),
            "device": job.params.get("device", "auto")}


# --- Steps: what a job runs, decided when it starts.

def job_steps(job_id: int, kind: str, params: dict, jobs_dir: Path,
              ray_address: str | None = None) -> tuple[dict, list[Step]]:
    """(params with the job's output folders filled in, the pipeline steps still to run; ingest and
    units on the Ray cluster at ``ray_address`` when given)."""
    folders = demo_folders(jobs_dir / str(job_id))
    params = {**params}
    if kind in ("demo", "world"):
        params.setdefault("world_dir", folders["world_dir"])
    if kind in ("demo", "ingest"):
        params.setdefault("data_dir", folders["data_dir"])
    if kind == "demo":
        params.setdefault("videos_dir", str(Path(params["world_dir"]) / "videos"))
    if kind in ("demo", "train"):
        params.setdefault("run_dir", folders["run_dir"])
    return params, plan(kind, params, ray_address)


# --- Progress: pure readers of a child's output and of a run's metrics.

def clean_log(text: str, limit: int = JOBS.log_chars) -> str:
    """The log as a person reads it: each line's last carriage-return segment (tqdm redraws), the tail kept."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines)[-limit:]


def tqdm_fraction(text: str) -> float | None:
    """The latest progress-bar percentage in a child's output, as a fraction."""
    matches = _TQDM_PERCENT.findall(text[-2000:])
    return min(int(matches[-1]), 100) / 100 if matches else None


def step_fraction(step: Step, output: str, metrics: list[dict]) -> float:
    """How far the step is. Training counts its steps (its bar's total is every epoch's steps), after a
    share for decoding the frames, not finished epochs: an epoch can take many minutes."""
    if step.run_dir is not None and step.epochs:
        tail = output[-4000:]
        training, decoding = _TRAINING_PERCENT.findall(tail), _DECODING_PERCENT.findall(tail)
        if training:
            return DECODING_SHARE + (1 - DECODING_SHARE) * min(int(training[-1]), 100) / 100
        if decoding:
            return DECODING_SHARE * min(int(decoding[-1]), 100) / 100
        return min(1.0, metrics[-1]["epoch"] / step.epochs) if metrics else 0.0
    return tqdm_fraction(output) or 0.0


# --- The worker.

def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # alive, owned by someone else
        return True
    return True


def recover_orphans(db: Session) -> int:
    """Fail this host's running jobs whose process is gone (their worker died); their logs stay."""
    orphans = [job for job in db.scalars(select(Job).where(Job.status == "running", Job.host == HOST))
               if not pid_alive(job.pid)]
    for job in orphans:
        job.status, job.finished_at = "failed", utcnow()
        job.log += "\n--- the worker running this job died; queue it again to resume ---\n"
    db.commit()
    return len(orphans)


def register_worker(db: Session) -> int:
    """A new worker's row (host, pid, device, GPU name); returns its id."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    worker = Worker(host=HOST, pid=os.getpid(), device=device,
                    gpu_name=torch.cuda.get_device_name(0) if device == "cuda" else None)
    db.add(worker)
    db.commit()
    return worker.id


class ClusterView:
    """The Ray cluster a worker's jobs use, as the workers panel shows it: asked again at most every
    ``heartbeat_seconds`` (every ``retry_seconds`` after a failure), the worker staying connected."""

    def __init__(self, address: str | None, settings: JobSettings = JOBS):
        self.address, self.settings = address or None, settings
        self._state: dict | None = None
        self._next = 0.0

    def state(self) -> dict | None:
        if self.address is None or time.monotonic() < self._next:
            return self._state
        import ray

        from model.engine import cluster_summary, connect

        try:
            connect(self.address, timeout_s=self.settings.cluster_connect_seconds)
            self._state = {"address": self.address, **cluster_summary()}
            self._next = time.monotonic() + self.settings.heartbeat_seconds
        except Exception as error:   # noqa: BLE001 - any failure is shown on the panel; the worker goes on
            ray.shutdown()
            self._state = {"address": self.address, "error": str(error)}
            self._next = time.monotonic() + self.settings.cluster_retry_seconds
        return self._state


def heartbeat(db: Session, worker_id: int, **values) -> None:
    """The worker is alive (and, with ``job_id=``, running that job); the caller commits."""
    db.execute(update(Worker).where(Worker.id == worker_id).values(last_seen_at=utcnow(), **values))


def live_workers(db: Session, settings: JobSettings = JOBS) -> list[Worker]:
    cutoff = utcnow() - timedelta(seconds=settings.worker_timeout_seconds)
    return list(db.scalars(select(Worker).where(Worker.last_seen_at >= cutoff).order_by(Worker.id)))


def fail_jobs_of_dead_workers(db: Session, settings: JobSettings = JOBS) -> int:
    """Fail the running jobs of workers silent for longer than the timeout (killed, or their machine lost),
    from any other process: the server or another worker. Their logs stay; queued again, they resume."""
    cutoff = utcnow() - timedelta(seconds=settings.worker_timeout_seconds)
    failed = 0
    for worker in db.scalars(select(Worker).where(Worker.last_seen_at < cutoff, Worker.job_id.is_not(None))):
        changed = db.execute(update(Job).where(Job.id == worker.job_id, Job.status == "running").values(
            status="failed", finished_at=utcnow(), pid=None,
            log=Job.log + f"\n--- worker {worker.id} ({worker.host}, pid {worker.pid}) stopped sending heartbeats; "
                          f"queue the job again to resume ---\n")).rowcount
        worker.job_id = None
        failed += changed
    db.commit()
    return failed


def claim_next_job(db: Session) -> Job | None:
    """Take the oldest queued job; the conditional UPDATE makes the claim safe among several workers."""
    for job_id in db.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(10)).all():
        claimed = db.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(
            status="running", started_at=utcnow(), host=HOST, pid=os.getpid())).rowcount
        db.commit()
        if claimed:
            return db.get(Job, job_id)
    return None


# The kernel kills a child whose worker died (PR_SET_PDEATHSIG: one outliving it would run on with nobody
# watching), set by util-linux's setpriv between fork and exec. Not a preexec_fn: Python code run in the child
# of a threaded worker can deadlock before exec, leaving Popen waiting (the likely cause of a CI run's hang).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


class _Child:
    """A child `ambient` process whose merged output is collected by a reader thread."""

    def __init__(self, step: Step, db_url: str, data_roots: str):
        # The URL (and any password in it) goes through the environment, not the command line or the log;
        # the worker's data roots too, which publishing at the end of a step checks the run against.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "AMBIENT_DATABASE_URL": db_url, "AMBIENT_DATA_ROOTS": data_roots}
        self.process = subprocess.Popen([*DIE_WITH_PARENT, *step.command(sys.executable)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, env=env)
        self.output = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := self.process.stdout.read1(65536):
            self.output = clean_log(self.output + chunk.decode(errors="replace"))

    def stop(self, grace: float) -> None:
        self.process.terminate()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def finish(self) -> int:
        code = self.process.wait()
        self._reader.join(5)
        return code


def run_job(sessions: sessionmaker, job_id: int, db_url: str, jobs_dir: Path,
            settings: JobSettings = JOBS, worker_id: int | None = None, cluster: ClusterView | None = None) -> str:
    """Run a claimed job's steps to the end, reporting as it goes; returns its final status."""
    cluster = cluster or ClusterView(None)
    with sessions() as db:
        job = db.get(Job, job_id)
        params, steps = job_steps(job.id, job.kind, job.params, jobs_dir, cluster.address)
        job.params, base_log = params, job.log
        db.commit()
    log = base_log
    # The jobs folder, where the job's own outputs lie, is always a root (`ambient worker --jobs-dir` may
    # name another than AMBIENT_JOBS_DIR, and AMBIENT_DATA_ROOTS may leave it out).
    roots = Settings(jobs_dir=str(jobs_dir)).allowed_roots()
    data_roots = roots_env(list(dict.fromkeys([*roots, Path(jobs_dir).resolve()])))
    for number, step in enumerate(steps):
        log += f"$ ambient {' '.join(step.argv)}\n"
        child = _Child(step, db_url, data_roots)
        status = _watch(sessions, job_id, child, step, number, len(steps), log, settings, worker_id, cluster)
        code = child.finish()
        log = clean_log(log + child.output)
        if status == "cancelled":
            _finish(sessions, job_id, "cancelled", log + "\n--- cancelled ---\n", None)
            return "cancelled"
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            if step.optional:
                log += f"\n--- step {step.name} failed ({how}); what the steps before it made stands ---\n"
                continue
            _finish(sessions, job_id, "failed", log + f"\n--- step {step.name} failed ({how}) ---\n", None)
            return "failed"
    _finish(sessions, job_id, "done", log, params.get("run_dir"))
    return "done"


def _watch(sessions: sessionmaker, job_id: int, child: _Child, step: Step, number: int, count: int,
           log: str, settings: JobSettings, worker_id: int | None, cluster: ClusterView) -> str:
    """Report the child's progress, metrics and log until it exits; kill it if the job is cancelled."""
    while True:
        exited = child.process.poll() is not None
        metrics = read_metrics(step.run_dir, settings.metrics_rows) if step.run_dir else None
        values = {"pid": child.process.pid, "stage": step.name, "log": clean_log(log + child.output),
                  "progress": (number + step_fraction(step, child.output, metrics or [])) / count}
        if metrics is not None:
            values["metrics"] = metrics
        with sessions() as db:
            db.execute(update(Job).where(Job.id == job_id).values(**values))
            if worker_id is not None:
                heartbeat(db, worker_id, cluster=cluster.state())
            db.commit()
            status = db.scalar(select(Job.status).where(Job.id == job_id))
        if status != "running":
            child.stop(settings.cancel_grace_seconds)
            return "cancelled"
        if exited:
            return "running"
        time.sleep(settings.poll_seconds)


def _finish(sessions: sessionmaker, job_id: int, status: str, log: str, run_dir: str | None) -> None:
    with sessions() as db:
        run_id = db.scalar(select(Run.id).where(Run.run_dir == str(Path(run_dir).resolve()))) if run_dir else None
        values = {"log": clean_log(log), "pid": None}
        if status != "cancelled":     # a cancelled job already has its status and finish time
            values.update(status=status, finished_at=utcnow())
        if status == "done":
            values["progress"] = 1.0
        if run_id is not None:
            values["run_id"] = run_id
        db.execute(update(Job).where(Job.id == job_id).values(**values))
        db.commit()


def worker_lifespan(settings):
    """A FastAPI lifespan that runs one `ambient worker` beside the server (``settings.start_worker``)."""
    @asynccontextmanager
    async def lifespan(_app):
        worker = subprocess.Popen([sys.executable, "-m", "backend.cli", "worker", "--jobs-dir", settings.jobs_dir],
                                  env={**os.environ, "AMBIENT_DATABASE_URL": settings.database_url})
        try:
            yield
        finally:
            worker.terminate()
            worker.wait(JOBS.cancel_grace_seconds)
    return lifespan


def run_worker(sessions: sessionmaker, db_url: str, jobs_dir: Path, once: bool = False,
               settings: JobSettings = JOBS, ray_address: str | None = None) -> int:
    """Claim and run jobs until stopped (or, with ``once``, until the queue is empty); returns jobs run.
    With ``ray_address`` its ingest and units jobs run on that Ray cluster."""
    cluster = ClusterView(ray_address, settings)
    with sessions() as db:
        recover_orphans(db)
        worker_id = register_worker(db)
    done, last_beat = 0, 0.0
    while True:
        with sessions() as db:
            if time.monotonic() - last_beat >= settings.heartbeat_seconds:   # idle: a write every few seconds
                heartbeat(db, worker_id, job_id=None, cluster=cluster.state())
                db.commit()
                fail_jobs_of_dead_workers(db, settings)
                last_beat = time.monotonic()
            job = claim_next_job(db)
            if job is not None:
                heartbeat(db, worker_id, job_id=job.id)
                db.commit()
        if job is None:
            if once:
                return done
            time.sleep(settings.poll_seconds)
            continue
        run_job(sessions, job.id, db_url, jobs_dir, settings, worker_id, cluster)
        done, last_beat = done + 1, 0.0
