"""Server-side settings from the environment (prefix ``AMBIENT_``), e.g. ``AMBIENT_DATABASE_URL``."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AMBIENT_")

    # SQLite in the working directory by default; any SQLAlchemy URL (e.g. postgresql+psycopg://...) works.
    database_url: str = "sqlite:///ambient.db"
    # Where jobs launched from the admin pages write their worlds, datasets and runs (one folder per job).
    jobs_dir: str = "jobs"
    # `ambient serve` also starts one `ambient worker` beside itself: the demo needs one command.
    start_worker: bool = False


@dataclass(frozen=True)
class JobSettings:
    """The admin pages' job queue (backend/jobs.py): how often the worker looks and reports."""

    poll_seconds: float = 0.5          # queue polling, and progress/log/cancel checks while a job runs
    log_chars: int = 200_000           # a job keeps the tail of its log: tqdm output grows without end
    metrics_rows: int = 2_000          # training evaluations kept on the job for its chart
    cancel_grace_seconds: float = 5.0  # SIGTERM, then SIGKILL after this long


JOBS = JobSettings()
