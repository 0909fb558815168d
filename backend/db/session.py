"""Engines and sessions. ``upgrade_db`` (``ambient db upgrade``, once per deployment) brings a database to
the current schema with Alembic; every other process opens it with ``open_db``, which checks the
revision and refuses a database that is behind instead of migrating it (two processes migrating at
once, as a web server and a worker starting together would, race)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
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


class SchemaBehind(RuntimeError):
    """The database's schema is not the one this code expects; the message says what to run."""


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@lru_cache(maxsize=None)
def open_db(url: str) -> Engine:
    """The engine for ``url``, whose schema must be at the head revision (else SchemaBehind)."""
    engine = make_engine(url)
    current, head = current_revision(engine), head_revision()
    if current != head:
        engine.dispose()
        state = f"at revision {current}" if current else "empty (no schema yet)"
        raise SchemaBehind(f"the database {make_url(url).render_as_string(hide_password=True)} is {state}; this "
                           f"version of Ambient needs revision {head}: run `ambient db upgrade --db URL` first")
    return engine


@lru_cache(maxsize=None)
def upgrade_db(url: str) -> Engine:
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
