"""Engines and sessions. ``upgrade_db`` (``ambient db upgrade``, once per deployment) brings a database to
the current schema with Alembic; every other process opens it with ``open_db``, which checks the
revision and refuses a database that is behind instead of migrating it (two processes migrating at
once, as a web server and a worker starting together would, race). An empty database (a new SQLite
file, a new PostgreSQL database: no tables at all) is the exception: whichever process opens it first
creates the current schema, under the database's write lock, and any other finds it made."""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# A revision file's `revision = '...'` and `down_revision = '...'` (a tuple of them for a merge), as
# migrations/script.py.mako writes them.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"""['"](\w+)['"]""")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the web app read while a stage writes; SQLite leaves foreign keys off unless asked.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _create_private(url: str) -> None:
    """Create a SQLite file readable by its owner only: it holds password and token hashes and the
    cookie-signing key. SQLite gives its -wal and -shm files the database file's permissions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") \
            or parsed.database.startswith("file:"):
        return
    try:
        os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:     # there already, or a folder that is not: SQLite says which when it opens it
        pass


def make_engine(url: str) -> Engine:
    _create_private(url)
    # Unbounded overflow: the app's sync routes run on anyio's 40 threads, and a pool smaller than
    # that deadlocks under load (threads wait for connections only other waiting threads can give
    # back); the threads themselves bound how many connections are open. In-memory SQLite has its own pool.
    in_memory = make_url(url).database in (None, "", ":memory:")
    engine = create_engine(url, **({} if in_memory else {"pool_size": 10, "max_overflow": -1}))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(url: str) -> Config:
    from alembic.config import Config     # Alembic takes 0.1 s to import: only migrating processes load it

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))   # ConfigParser interpolates '%'
    return config


class SchemaBehind(RuntimeError):
    """The database's schema is not the one this code expects; the message says what to run."""


def head_revision() -> str:
    """The newest revision in migrations/versions, read from the files' revision lines: Alembic's
    ScriptDirectory (0.1 s of imports at every start) is asked only when they do not name exactly one head."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for name, value in _REVISION_LINE.findall(path.read_text()):
            (revisions if name == "revision" else parents).update(_QUOTED.findall(value))
    heads = revisions - parents
    if len(heads) == 1:
        return heads.pop()
    from alembic.script import ScriptDirectory      # no head or several: Alembic's own answer or error
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database's alembic_version table holds, None without one; read with SQL, so that
    opening a database does not import Alembic (0.1 s), which is asked only when the table holds several."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        revisions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(revisions) > 1:      # unmerged branches: Alembic's own error
            from alembic.runtime.migration import MigrationContext
            return MigrationContext.configure(connection).get_current_revision()
    return revisions[0] if revisions else None


@lru_cache(maxsize=None)
def open_db(url: str) -> Engine:
    """The engine for ``url``, whose schema must be at the head revision (else SchemaBehind); an empty
    database is created at the head revision first."""
    _make_sqlite_folder(url)
    engine = make_engine(url)
    current, head = current_revision(engine), head_revision()
    if current is None:
        _create_if_empty(engine, url)
        current = current_revision(engine)
    if current != head:
        engine.dispose()
        state = f"at revision {current}" if current else "not an Ambient database (tables but no revision)"
        raise SchemaBehind(f"the database {make_url(url).render_as_string(hide_password=True)} is {state}; this "
                           f"version of Ambient needs revision {head}: run `ambient db upgrade --db URL` first")
    return engine


@lru_cache(maxsize=None)
def upgrade_db(url: str) -> Engine:
    """The engine for ``url`` after ``alembic upgrade head`` (creating the SQLite file if needed)."""
    _make_sqlite_folder(url)
    engine = make_engine(url)
    if current_revision(engine) != head_revision():     # at the head, Alembic (0.1 s to import) has nothing to do
        with engine.begin() as connection:
            _upgrade(connection, url)
    return engine


def _make_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _upgrade(connection: Connection, url: str) -> None:
    from alembic import command

    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


_SCHEMA_LOCK = 0x616D6269   # PostgreSQL advisory-lock key for creating the schema ("ambi")


def _create_if_empty(engine: Engine, url: str) -> None:
    """Migrate a database with no tables at all to the head revision, in one transaction that holds the
    write lock from the check on: a second process doing the same waits, then finds tables and leaves them."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # pysqlite would commit each CREATE TABLE on its own: one explicit transaction, taking the lock now.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        if inspect(connection).get_table_names():
            connection.rollback()
            return
        _upgrade(connection, url)
        connection.commit()


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
