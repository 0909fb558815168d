"""What several commands share: the database option and how it resolves."""
from __future__ import annotations

DB_HELP = "SQLAlchemy URL [default: AMBIENT_DATABASE_URL or sqlite:///ambient.db]."


def database_url(db: str | None) -> str:
    """--db, else the server settings' URL (AMBIENT_DATABASE_URL)."""
    from backend.config import Settings

    return db or Settings().database_url
