"""Engines and sessions; ``init_db`` brings any database to the current schema with Alembic."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the web app read while a stage writes; SQLite leaves foreign keys off unless asked.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    # Unbounded overflow: the app's sync routes run on anyio's 40 threads, and a pool smaller than
    # that deadlocks under load (threads wait for connections only other waiting threads can give
    # back); the threads themselves bound how many connections are open. In-memory SQLite has its own pool.
    in_memory = make_url(url).database in (None, "", ":memory:")
    engine = create_engine(url, **({} if in_memory else {"pool_size": 10, "max_overflow": -1}))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))   # ConfigParser interpolates '%'
    return config


@lru_cache(maxsize=None)
def init_db(url: str) -> Engine:
    """The engine for ``url`` after ``alembic upgrade head`` (creating the SQLite file if needed)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return engine


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
