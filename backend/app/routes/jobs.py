"""Admins run the pipeline from the browser: job forms, the live job page, and the jobs API.

The web server only writes rows of the ``jobs`` table; ``ambient worker`` does the work (backend/jobs.py).
"""
from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from backend.app.campaign import default_campaign
from backend.app.deps import admin_user, check_csrf, flash, form_fields, get_db, get_settings, render
from backend.db.models import Annotator, Job, Run
from backend.jobs import (FIELD_LABELS, JOB_KINDS, PROBE_BENCHMARKS, JobError, cancel_job, create_job, data_folders,
                          fail_jobs_of_dead_workers, job_params, live_workers, requeue_job, training_warning,
                          units_fields)
from backend.pipeline import DEMO
from model.data.dataset import LABEL_KINDS, read_report, report_table
from model.device import DEVICE_CHOICES
from model.settings import LABELS, OBJECT_MODES, TRAIN_PRESETS, WORLD_PRESETS

router = APIRouter(include_in_schema=False, dependencies=[Depends(admin_user)])
api = APIRouter(prefix="/api/jobs", tags=["jobs"], dependencies=[Depends(admin_user)])
LOG_TAIL = 20_000       # characters of the log sent with each poll
RESUMABLE = ("failed", "cancelled")
NO_WORKER = "waiting: no worker is running; start one with `ambient worker`"


class JobState(BaseModel):
    id: int
    kind: str
    status: str
    progress: float
    stage: str
    params: dict
    metrics: list[dict]
    log: str
    run_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    device: str                 # where it runs: the job's device choice (auto, cpu, cuda, cuda:N)
    waiting: str | None         # why a queued job does not start, when nothing will start it


class WorkerState(BaseModel):
    id: int
    host: str
    pid: int
    device: str
    gpu_name: str | None
    started_at: datetime
    last_seen_at: datetime
    job_id: int | None
    cluster: dict | None    # the Ray cluster it uses: address, nodes, cpus, gpus, cpus_free, gpus_free (or error)


def job_state(job: Job, workers_alive: bool = True) -> JobState:
    return JobState(id=job.id, kind=job.kind, status=job.status, progress=job.progress, stage=job.stage,
                    params=job.params, metrics=job.metrics, log=job.log[-LOG_TAIL:], run_id=job.run_id,
                    created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                    device=str(job.params.get("device", "cpu")),
                    waiting=NO_WORKER if job.status == "queued" and not workers_alive else None)


def _states(db: Session, jobs) -> list[JobState]:
    """The jobs' states after failing those of dead workers; queued ones say when no worker is alive."""
    fail_jobs_of_dead_workers(db)
    alive = bool(live_workers(db))
    return [job_state(job, alive) for job in jobs]


def _job(db: Session, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"There is no job {job_id}.")
    return job


# The job forms' folder fields: a list of what lies under the data roots, and a box to type another folder
# (FIELD + TYPED), which wins when filled.
FOLDER_FIELDS = ("videos_dir", "data_dir", "run_dir", "dataset")
TYPED = "_typed"


def with_typed_folders(fields: dict) -> dict:
    """The form's fields with each folder typed in its box in place of the one picked from the list."""
    merged = {key: value for key, value in fields.items() if not key.endswith(TYPED)}
    for name in FOLDER_FIELDS:
        typed = str(fields.get(name + TYPED) or "").strip()
        if typed:
            merged[name] = typed
    return merged


def _jobs_page(request: Request, user: Annotator, db: Session, error: JobError | None = None,
               fields: dict | None = None, status_code: int = 200, warning: str | None = None):
    fail_jobs_of_dead_workers(db)
    jobs = db.scalars(select(Job).order_by(Job.id.desc()).limit(200)).all()
    roots = get_settings(request).allowed_roots()
    folders = data_folders(roots)
    run_names = dict(db.execute(select(Run.run_dir, Run.name).where(Run.run_dir.in_(folders.runs))).all())
    return render(request, "jobs.html", user=user, jobs=jobs, workers=live_workers(db), error=error,
                  fields=fields or {}, no_worker=NO_WORKER, warning=warning, demo=DEMO,
                  status_code=status_code, kinds=JOB_KINDS, world_presets=list(WORLD_PRESETS),
                  train_presets=list(TRAIN_PRESETS), label_kinds=LABEL_KINDS, devices=DEVICE_CHOICES, objects=OBJECT_MODES,
                  default_k=LABELS.clusters, folders=folders, run_names=run_names, roots=roots, typed=TYPED,
                  labels=FIELD_LABELS, probe_benchmarks=PROBE_BENCHMARKS)


@router.get("/admin/jobs")
def jobs_page(request: Request, probe: str | None = None, user: Annotator = Depends(admin_user),
              db: Session = Depends(get_db)):
    # ?probe=RUN_DIR (the Representation page's link): the probe form with that run chosen.
    return _jobs_page(request, user, db, fields={"kind": "probe", "run_dir": probe} if probe else None)


@router.post("/admin/jobs", dependencies=[Depends(check_csrf)])
def new_job(request: Request, form: FormData = Depends(form_fields), user: Annotator = Depends(admin_user),
            db: Session = Depends(get_db)):
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    request_fields = with_typed_folders(fields)
    roots = get_settings(request).allowed_roots()
    try:
        if fields.get("kind") == "train" and not fields.get("confirm"):
            # Too little data for the preset: say so, with what to change, before anything is queued.
            warning = training_warning(job_params("train", request_fields, roots))
            if warning:
                return _jobs_page(request, user, db, fields=fields, warning=warning)
        job = create_job(db, fields.get("kind", ""), request_fields, roots)
    except JobError as error:
        # The page shows the error beside its field, in the card that was sent (the others keep their defaults).
        return _jobs_page(request, user, db, error=error, fields=fields, status_code=422)
    flash(request, f"Job {job.id} ({job.kind}) is queued.")
    return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)


@router.get("/admin/jobs/{job_id}")
def job_page(job_id: int, request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    job = _job(db, job_id)
    (state,) = _states(db, [job])
    # An ingest's report, once written: the table `ambient ingest` ends with.
    report = read_report(job.params["data_dir"]) if job.kind in ("ingest", "demo") and job.params.get("data_dir") \
        else None
    # "Label its units": the run's default campaign, or the form that creates one (a run enters no queue alone).
    campaign = default_campaign(db, job.run_id) if job.run_id else None
    return render(request, "jobs_job.html", user=user, job=job, state=state.model_dump(mode="json"),
                  resumable=RESUMABLE, ingest_report=report, ingest_table=report_table(report) if report else [],
                  label_units_link=f"/admin/campaigns/{campaign.id}" if campaign else f"/admin/campaigns/new?run={job.run_id}")


@router.post("/admin/jobs/{job_id}/cancel", dependencies=[Depends(check_csrf)])
def cancel_page(job_id: int, request: Request, db: Session = Depends(get_db)):
    _job(db, job_id)
    flash(request, f"Job {job_id} cancelled." if cancel_job(db, job_id) else f"Job {job_id} had already ended.")
    return RedirectResponse(f"/admin/jobs/{job_id}", status_code=303)


@router.post("/admin/jobs/{job_id}/resume", dependencies=[Depends(check_csrf)])
def resume_page(job_id: int, request: Request, db: Session = Depends(get_db)):
    _job(db, job_id)
    flash(request, f"Job {job_id} is queued again." if requeue_job(db, job_id)
          else f"Job {job_id} can only be resumed once it has failed or been cancelled.")
    return RedirectResponse(f"/admin/jobs/{job_id}", status_code=303)


@router.post("/admin/jobs/{job_id}/extract-units", dependencies=[Depends(check_csrf)])
def extract_units_page(job_id: int, request: Request, db: Session = Depends(get_db)):
    try:
        units = _extract_units(db, _job(db, job_id))
    except JobError as error:
        raise HTTPException(409, str(error)) from None
    flash(request, f"Job {units.id} extracts the units of job {job_id}'s run.")
    return RedirectResponse(f"/admin/jobs/{units.id}", status_code=303)


def _extract_units(db: Session, job: Job) -> Job:
    if job.kind != "train" or job.status != "done":
        raise JobError(f"job {job.id} is not a finished training job")
    return create_job(db, "units", units_fields(job))      # the finished job's own folders


@api.get("", response_model=list[JobState])
def list_jobs(db: Session = Depends(get_db)) -> list[JobState]:
    """Every job, newest first (the last 200)."""
    return _states(db, db.scalars(select(Job).order_by(Job.id.desc()).limit(200)).all())


@api.get("/workers", response_model=list[WorkerState])
def list_workers(db: Session = Depends(get_db)) -> list[WorkerState]:
    """The workers that sent a heartbeat recently (host, pid, device, GPU, current job)."""
    return [WorkerState.model_validate(worker, from_attributes=True) for worker in live_workers(db)]


@api.get("/{job_id}", response_model=JobState)
def get_job(job_id: int, db: Session = Depends(get_db)) -> JobState:
    """One job's status, progress (0..1), training metrics so far and the tail of its log."""
    return _states(db, [_job(db, job_id)])[0]


@api.post("", response_model=JobState, status_code=201, dependencies=[Depends(check_csrf)])
async def post_job(request: Request, db: Session = Depends(get_db)) -> JobState:
    """Queue a job: ``{"kind": "demo" | "world" | "ingest" | "labels" | "train" | "units" | "dissect" | "probe" |
    "visualize", ...fields}``."""
    try:
        fields = await request.json()
    except ValueError:
        raise HTTPException(422, "The body must be a JSON object.") from None
    if not isinstance(fields, dict):
        raise HTTPException(422, "The body must be a JSON object.")
    try:
        job = create_job(db, str(fields.get("kind", "")), fields, get_settings(request).allowed_roots())
    except JobError as error:
        raise HTTPException(422, str(error)) from None
    return _states(db, [job])[0]


@api.post("/{job_id}/cancel", response_model=JobState, dependencies=[Depends(check_csrf)])
def cancel(job_id: int, db: Session = Depends(get_db)) -> JobState:
    """Cancel a queued or running job (its worker kills the child process)."""
    _job(db, job_id)
    if not cancel_job(db, job_id):
        raise HTTPException(409, f"Job {job_id} has already ended.")
    db.expire_all()
    return job_state(_job(db, job_id))


@api.post("/{job_id}/resume", response_model=JobState, dependencies=[Depends(check_csrf)])
def resume(job_id: int, db: Session = Depends(get_db)) -> JobState:
    """Queue a failed or cancelled job again; training continues from its last checkpoint."""
    _job(db, job_id)
    if not requeue_job(db, job_id):
        raise HTTPException(409, f"Job {job_id} can only be resumed once it has failed or been cancelled.")
    db.expire_all()
    return job_state(_job(db, job_id))


@api.post("/{job_id}/extract-units", response_model=JobState, status_code=201, dependencies=[Depends(check_csrf)])
def extract_units(job_id: int, db: Session = Depends(get_db)) -> JobState:
    """Queue the unit extraction of a finished training job's run."""
    try:
        return job_state(_extract_units(db, _job(db, job_id)))
    except JobError as error:
        raise HTTPException(409, str(error)) from None
