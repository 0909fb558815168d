"""Server-side settings from the environment (prefix ``AMBIENT_``), e.g. ``AMBIENT_DATABASE_URL``."""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AMBIENT_")

    # SQLite in the working directory by default; any SQLAlchemy URL (e.g. postgresql+psycopg://...) works.
    database_url: str = "sqlite:///ambient.db"
    # Where jobs launched from the admin pages write their worlds, datasets and runs (one folder per job).
    jobs_dir: str = "jobs"
    # `ambient serve` also starts one `ambient worker` beside itself: the demo needs one command.
    start_worker: bool = False
