"""Server-side settings from the environment (prefix ``AMBIENT_``), e.g. ``AMBIENT_DATABASE_URL``."""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AMBIENT_")

    # SQLite in the working directory by default; any SQLAlchemy URL (e.g. postgresql+psycopg://...) works.
    database_url: str = "sqlite:///ambient.db"
