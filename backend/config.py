"""Server-side settings from the environment (prefix ``AMBIENT_``), e.g. ``AMBIENT_DATABASE_URL``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AMBIENT_")

    # SQLite in the working directory by default; any SQLAlchemy URL (e.g. postgresql+psycopg://...) works.
    database_url: str = "sqlite:///ambient.db"
    # Where jobs launched from the admin pages write their worlds, datasets and runs (one folder per job).
    jobs_dir: str = "jobs"
    # `ambient serve` also starts one `ambient worker` beside itself: the demo needs one command.
    start_worker: bool = False
    # Folders that jobs may read, separated by ":" (default: the jobs folder and ./demo).
    data_roots: str = ""
    # A Ray cluster (host:port, ray://host:port or auto) for the ingest and units jobs' work; the workers
    # panel shows it. Empty: jobs run on their worker's machine only.
    ray_address: str = ""

    def allowed_roots(self) -> list[Path]:
        """The folders job inputs must lie under, resolved."""
        named = [part for part in self.data_roots.split(":") if part.strip()] or [self.jobs_dir, "demo"]
        return [Path(part).expanduser().resolve() for part in named]

    # Login sessions end after `session_days`, or after `session_idle_minutes` without a request.
    session_days: int = 14
    session_idle_minutes: int = 240
    # The session cookie is Secure on HTTPS requests (also those a trusted proxy forwards as HTTPS);
    # true: on every request, for a TLS proxy that does not say so.
    secure_cookie: bool = False
    # Every form and API body is a few kB: a bigger one is refused before it is read into memory.
    max_request_bytes: int = 1024 * 1024
    min_password_length: int = 8
    # zxcvbn's strength score (0-4) a new password needs, judged also against the account's own name.
    min_password_score: int = 3
    # Failed logins within `login_window_seconds`: the 11th for one account from one address gets 429; one
    # address gets `login_address_failures` over all names; past `login_account_failures` for one name
    # (from anywhere) the account is locked, but for the right password from an address with no failures for it.
    login_failures: int = 10
    login_address_failures: int = 50
    login_account_failures: int = 20
    login_window_seconds: int = 60
    # Where those failures are counted (a `limits` storage URI): memory is per server process;
    # several workers share one count with e.g. redis://host:6379.
    login_failures_storage: str = "memory://"
    # Proxies (addresses, ","-separated) whose X-Forwarded-For and X-Forwarded-Proto are believed: only
    # the last entry, the address the proxy itself saw. Requests from anywhere else: their own address.
    trusted_proxies: str = "127.0.0.1,::1"
    # API tokens expire after `token_days` unless their maker asks for fewer or more, at most `token_max_days`.
    token_days: int = 30
    token_max_days: int = 365
    # Argon2 takes 64 MiB a check: at most this many run at once, the others wait without a thread.
    password_checks_at_once: int = 2
    # Listening to an image (/runs/{id}/listen and POST /api/v1/runs/{id}/predict). An upload is refused past
    # `predict_max_upload_bytes` (by its Content-Length, before it is read) or `predict_max_pixels` pixels
    # (from the image's header, before it is decoded); an account gets `predict_per_minute` predictions a
    # minute and `predict_bytes_per_hour` uploaded bytes an hour. At most `predict_at_once` predictions run at
    # a time, and `synthesis_at_once` syntheses (one per account, `synthesis_queue` unfinished at most); a
    # synthesised clip is `synthesis_seconds` long. All are counted in the database, over every server process.
    predict_max_upload_bytes: int = 10 * 1024 * 1024
    predict_max_pixels: int = 40_000_000
    predict_per_minute: int = 30
    predict_bytes_per_hour: int = 200 * 1024 * 1024
    predict_at_once: int = 2
    synthesis_at_once: int = 1
    synthesis_queue: int = 8
    synthesis_seconds: float = 3.75
    # Images are decoded in `predict_at_once` worker processes (model/data/decode.py): one that takes longer than
    # `predict_decode_seconds` is killed (422) and a new one started; a decode may use `predict_decode_memory_bytes`
    # (refused from the header when it would need more; the worker's address space is capped too). A JPEG of
    # more than `predict_max_jpeg_scans` scans (fewer for a large one; encoders write about 10) is refused
    # before decoding: each scan is a pass over the whole image.
    predict_decode_seconds: float = 3.0
    predict_decode_memory_bytes: int = 1024 ** 3
    predict_max_jpeg_scans: int = 64
    # Undo reaches back to the annotator's latest answer only, and only this long after it.
    undo_minutes: int = 10
    # A unit handed to an annotator is held this long after its page was last open (the page's heartbeat
    # holds it on each minute): the unit of a closed tab goes back to the queue within minutes.
    hold_idle_minutes: int = 5
    # The answer that gives a unit its last judge can be undone this long only: the unit's verdict is then complete.
    last_judge_undo_seconds: int = 60


@dataclass(frozen=True)
class JobSettings:
    """The admin pages' job queue (backend/jobs.py): how often the worker looks and reports."""

    poll_seconds: float = 0.5          # queue polling, and progress/log/cancel checks while a job runs
    log_chars: int = 200_000           # a job keeps the tail of its log: tqdm output grows without end
    metrics_rows: int = 2_000          # training evaluations kept on the job for its chart
    cancel_grace_seconds: float = 5.0  # SIGTERM, then SIGKILL after this long
    heartbeat_seconds: float = 2.0     # a worker says it is alive this often, also while a job runs
    worker_timeout_seconds: float = 30.0   # silent longer than this: dead; its running job is failed
    cluster_connect_seconds: float = 5.0   # joining the Ray cluster for the workers panel, at most (a heartbeat waits)
    cluster_retry_seconds: float = 30.0    # after a failed join, the next try


JOBS = JobSettings()
