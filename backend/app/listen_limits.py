"""What every server process shares about listening (backend/app/listen.py), kept in the database so that the
limits hold however many uvicorn workers serve the app: each account's predictions a minute and uploaded bytes an
hour, the `predict_at_once` predictions running at a time, the predictions the synthesise button names, and the
synthesis jobs (state, progress, audio) that any process answers for. The `limits` library, which counts failed
logins, has no SQL storage: the counts here are rows of `upload_usage`, summed over a moving window.

Each check-and-take is one short transaction that no other process's interleaves: on SQLite it begins with a write
(deleting what has expired), which takes the database's only write lock; on PostgreSQL it first takes an advisory
transaction lock. A process that dies holding a prediction slot frees it when the slot's lease runs out; its
unfinished syntheses stop counting once their heartbeat is a minute old.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

from sqlalchemy import Delete, Update, delete, func, select, text, update
from sqlalchemy.orm import Session, defer, sessionmaker

from backend.app.errors import TaskError
from backend.app.reservations import aware, utcnow
from backend.config import Settings
from backend.db.models import ListenPrediction, PredictionSlot, SynthesisJob, UploadUsage

if TYPE_CHECKING:
    import numpy as np      # imported where used: the app answers its first page without it

SLOT_LEASE = timedelta(minutes=2)        # a prediction takes seconds; a dead process's slot is free after this
SLOT_WAIT_SECONDS = 30.0                 # how long a prediction waits for a slot before a 503
SLOT_POLL_SECONDS = 0.1
PREDICTION_KEPT = timedelta(hours=1)     # a prediction's texture, for its synthesise button
SYNTHESIS_HEARTBEAT = timedelta(seconds=2)     # an unfinished job's row is refreshed this often ...
SYNTHESIS_ABANDONED = timedelta(minutes=1)     # ... and counts as failed when older than this
SYNTHESIS_POLL_SECONDS = 0.5
JOBS_KEPT = 100                          # finished syntheses kept (with their audio), the newest
UNFINISHED = ("queued", "running")
WINDOWS = {"predict": timedelta(minutes=1), "upload": timedelta(hours=1)}

# PostgreSQL advisory-lock namespaces (the first of pg_advisory_xact_lock's two keys).
_USAGE_LOCK, _SLOTS_LOCK, _SYNTHESIS_LOCK = 0x6C697375, 0x6C69736C, 0x6C697379


def _serialized(db: Session, first_write: Delete | Update, key: tuple[int, int]) -> None:
    """Begin a transaction that no other process's with the same ``key`` interleaves (see the module's docstring)."""
    db.commit()      # end any earlier read, so that what follows sees the newest rows
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(:namespace, :id)"), {"namespace": key[0], "id": key[1]})
    db.execute(first_write)


class UploadGuard:
    """Per-account bounds on predictions: requests a minute and uploaded bytes an hour, in every process together."""

    def __init__(self, settings: Settings, sessions: sessionmaker):
        self.settings, self.sessions = settings, sessions

    def request(self, account: int) -> None:
        """Count a prediction; 429 past `predict_per_minute`."""
        limit = self.settings.predict_per_minute
        self._count(account, "predict", 1, limit, f"predictions (at most {limit} a minute)")

    def upload(self, account: int, size: int) -> None:
        """Count an upload's bytes; 429 past `predict_bytes_per_hour`."""
        limit = self.settings.predict_bytes_per_hour
        self._count(account, "upload", max(1, size), limit, f"uploaded bytes (at most {limit // 2**20} MiB an hour)")

    def _count(self, account: int, kind: str, amount: int, limit: int, what: str) -> None:
        now = utcnow()
        window = WINDOWS[kind]
        with self.sessions() as db:
            _serialized(db, delete(UploadUsage).where(UploadUsage.at < now - max(WINDOWS.values())),
                        (_USAGE_LOCK, account))
            used = db.execute(select(UploadUsage.amount, UploadUsage.at).where(
                UploadUsage.annotator_id == account, UploadUsage.kind == kind, UploadUsage.at > now - window)
                .order_by(UploadUsage.at)).all()
            total = sum(row.amount for row in used)
            if total + amount > limit:
                db.rollback()
                wait = _wait(used, total, amount, limit, window, now)
                raise TaskError(f"Too many {what}: try again in {wait} s.", 429, {"Retry-After": str(wait)})
            db.add(UploadUsage(annotator_id=account, kind=kind, amount=amount, at=now))
            db.commit()


def _wait(used, total: int, amount: int, limit: int, window: timedelta, now: datetime) -> int:
    """Whole seconds until enough of ``used`` (oldest first) has left the window for ``amount`` more to fit."""
    for row in used:
        total -= row.amount
        if total + amount <= limit:
            return max(1, int((aware(row.at) + window - now).total_seconds()) + 1)
    return int(window.total_seconds())       # more than the limit at once: it never fits


class PredictionSlots:
    """The `predict_at_once` predictions that may run at a time over all the server's processes."""

    def __init__(self, settings: Settings, sessions: sessionmaker):
        self.settings, self.sessions = settings, sessions

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold a slot for the block (blocking: run it in a worker thread); 503 when none frees up in
        SLOT_WAIT_SECONDS."""
        holder = secrets.token_hex(16)
        deadline = time.monotonic() + SLOT_WAIT_SECONDS
        while (number := self._take(holder)) is None:
            if time.monotonic() > deadline:
                raise TaskError("The server is busy predicting for others: try again in a moment.", 503,
                                {"Retry-After": "10"})
            time.sleep(SLOT_POLL_SECONDS)
        try:
            yield
        finally:
            with self.sessions() as db:
                db.execute(delete(PredictionSlot).where(PredictionSlot.number == number,
                                                        PredictionSlot.holder == holder))
                db.commit()

    def _take(self, holder: str) -> int | None:
        now = utcnow()
        with self.sessions() as db:
            _serialized(db, delete(PredictionSlot).where(PredictionSlot.expires_at < now), (_SLOTS_LOCK, 0))
            taken = set(db.scalars(select(PredictionSlot.number)))
            free = [n for n in range(self.settings.predict_at_once) if n not in taken]
            if not free:
                db.rollback()
                return None
            db.add(PredictionSlot(number=free[0], holder=holder, expires_at=now + SLOT_LEASE))
            db.commit()
            return free[0]


def remember_prediction(sessions: sessionmaker, account: int, run_id: int, texture: np.ndarray) -> str:
    """Keep a predicted texture for PREDICTION_KEPT; the key its synthesise button sends back."""
    import numpy as np

    key = secrets.token_urlsafe(12)
    now = utcnow()
    with sessions() as db:
        db.execute(delete(ListenPrediction).where(ListenPrediction.created_at < now - PREDICTION_KEPT))
        db.add(ListenPrediction(key=key, annotator_id=account, run_id=run_id, created_at=now,
                                texture=np.asarray(texture, "<f8").tobytes()))
        db.commit()
    return key


# --- Synthesis jobs

def job_record(job: SynthesisJob) -> dict:
    return {"id": job.id, "state": job.state, "done": job.done, "total": job.total, "error": job.error,
            "audio_url": f"/listen/synthesis/{job.id}/audio.wav" if job.state == "done" else None}


def _end_abandoned(now: datetime) -> Update:
    """The unfinished jobs whose process stopped beating: failed."""
    return (update(SynthesisJob)
            .where(SynthesisJob.state.in_(UNFINISHED), SynthesisJob.updated_at < now - SYNTHESIS_ABANDONED)
            .values(state="failed", error="The server process synthesising it stopped: synthesise again.",
                    updated_at=now))


def queue_synthesis(settings: Settings, sessions: sessionmaker, account: int, prediction: str
                    ) -> tuple[SynthesisJob, np.ndarray]:
    """A new queued job for a prediction's texture (and the texture); 404 for an unknown (or another account's)
    prediction, 429 while the account has one unfinished, 503 when `synthesis_queue` are unfinished."""
    import numpy as np

    now = utcnow()
    with sessions() as db:
        _serialized(db, _end_abandoned(now), (_SYNTHESIS_LOCK, 0))
        remembered = db.get(ListenPrediction, prediction)
        if remembered is None or remembered.annotator_id != account:
            db.rollback()
            raise TaskError("That prediction is not known (any more): predict again, then synthesise.", 404)
        unfinished = db.scalars(select(SynthesisJob.annotator_id).where(SynthesisJob.state.in_(UNFINISHED))).all()
        if account in unfinished:
            db.rollback()
            raise TaskError("You have a synthesis under way: wait for it to finish.", 429, {"Retry-After": "5"})
        if len(unfinished) >= settings.synthesis_queue:
            db.rollback()
            raise TaskError("The server is synthesising for others: try again in a minute.", 503,
                            {"Retry-After": "60"})
        kept = select(SynthesisJob.id).where(SynthesisJob.state.not_in(UNFINISHED)) \
            .order_by(SynthesisJob.updated_at.desc()).limit(JOBS_KEPT)
        db.execute(delete(SynthesisJob).where(SynthesisJob.state.not_in(UNFINISHED), SynthesisJob.id.not_in(kept)))
        job = SynthesisJob(id=secrets.token_urlsafe(12), annotator_id=account, state="queued", done=0, total=0,
                           created_at=now, updated_at=now)
        db.add(job)
        db.commit()
        return job, np.frombuffer(remembered.texture, "<f8").copy()


def wait_to_run(settings: Settings, sessions: sessionmaker, job_id: str) -> bool:
    """Block until the job may run (fewer than `synthesis_at_once` running in every process) and mark it running,
    refreshing its heartbeat while it waits; False when it was ended meanwhile (it was abandoned)."""
    while True:
        now = utcnow()
        with sessions() as db:
            _serialized(db, _end_abandoned(now), (_SYNTHESIS_LOCK, 0))
            if db.scalar(select(SynthesisJob.state).where(SynthesisJob.id == job_id)) != "queued":
                db.rollback()
                return False
            running = db.scalar(select(func.count(SynthesisJob.id)).where(SynthesisJob.state == "running"))
            state = "running" if running < settings.synthesis_at_once else "queued"
            db.execute(update(SynthesisJob).where(SynthesisJob.id == job_id).values(state=state, updated_at=now))
            db.commit()
        if state == "running":
            return True
        time.sleep(SYNTHESIS_POLL_SECONDS)


def progress_writer(sessions: sessionmaker, job_id: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` that writes the job's progress (and heartbeat), at most every SYNTHESIS_HEARTBEAT."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] < SYNTHESIS_HEARTBEAT.total_seconds() and done < total:
            return
        last[0] = time.monotonic()
        finish(sessions, job_id, state="running", done=done, total=total)
    return progress


def finish(sessions: sessionmaker, job_id: str, **values) -> None:
    """Write the job's ``values`` (state, progress, audio, error) and its heartbeat."""
    with sessions() as db:
        db.execute(update(SynthesisJob).where(SynthesisJob.id == job_id, SynthesisJob.state.in_(UNFINISHED))
                   .values(updated_at=utcnow(), **values))
        db.commit()


def synthesis_job(sessions: sessionmaker, account: int, job_id: str) -> SynthesisJob:
    """The account's job as any process last wrote it (its audio not loaded); 404 for another's or an unknown one."""
    with sessions() as db:
        job = db.get(SynthesisJob, job_id, options=[defer(SynthesisJob.wav)])
        if job is None or job.annotator_id != account:
            raise TaskError(f"There is no synthesis {job_id[:40]!r} of yours.", 404)
        db.expunge(job)       # shown, not written back
    if job.state in UNFINISHED and aware(job.updated_at) < utcnow() - SYNTHESIS_ABANDONED:
        job.state, job.error = "failed", "The server process synthesising it stopped: synthesise again."
    return job


def synthesis_audio(sessions: sessionmaker, account: int, job_id: str) -> bytes:
    """The account's finished job's WAV; 404 for another's or an unknown job, 409 for one not done."""
    job = synthesis_job(sessions, account, job_id)
    if job.state != "done":
        raise TaskError(f"Synthesis {job_id[:40]} is {job.state}, not done.", 409)
    with sessions() as db:
        return db.scalar(select(SynthesisJob.wav).where(SynthesisJob.id == job_id))
