"""The unit store: migrations, SQLite pragmas, and the one-transaction replacement of a run's units."""
import os
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from app_helpers import ON_SQLITE, REPO, add_campaign, database_url, running_server
from backend.db import store
from backend.db.models import Annotation, Annotator, Base, Category, Frame, Run, Unit, UnitImage
from backend.db.session import upgrade_db, session_factory
from model.categories import load_categories
from model.data.dataset import FrameRecord

RECORDS = [FrameRecord(frame_id=i, video_id=f"v{i // 2}", video=f"v{i // 2}.mp4", frame_index=i % 2,
                       time=1.0 + i % 2, image=f"videos/v{i // 2}/frame_{i % 2:02d}.jpg",
                       clip=f"videos/v{i // 2}/clip_{i % 2:02d}.mp3", split="test", silent=False)
           for i in range(6)]
LAYER = store.LayerRecord("conv5", 3, 99, 163.0, 27.0)


def _units(tag: bytes, fail_at: int | None = None):
    for index in range(3):
        if index == fail_at:
            raise RuntimeError("extraction failed")
        yield store.UnitRecord(index, [store.UnitImageRecord(row, 10.0 - row, tag + bytes([row]))
                                       for row in range(4)])


def _write(url, tag: bytes, fail_at=None, tmp_path=None):
    with session_factory(upgrade_db(url)).begin() as session:
        store.seed_categories(session, load_categories())
        dataset = store.register_dataset(session, tmp_path / "data", RECORDS, None, str(tmp_path / "videos"))
        run = store.upsert_run(session, tmp_path / "run", "caffenet-bn", "cluster", {"loss": 1.0}, dataset)
        store.replace_units(session, run, dataset, LAYER, _units(tag, fail_at))


def _snapshot(url):
    with session_factory(upgrade_db(url))() as session:
        return sorted(session.execute(select(Unit.index, UnitImage.rank, UnitImage.masked_jpeg)
                                      .join(UnitImage.unit)).all())


@pytest.fixture
def url(tmp_path):
    return database_url(tmp_path)


def test_migrations_create_the_models_schema_with_wal_and_foreign_keys(url):
    engine = upgrade_db(url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        if ON_SQLITE:   # pragmas are SQLite's; other databases have WAL and foreign keys built in
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_writing_units_registers_frames_and_categories_once(url, tmp_path):
    _write(url, b"a", tmp_path=tmp_path)
    _write(url, b"b", tmp_path=tmp_path)
    with session_factory(upgrade_db(url))() as session:
        assert session.scalar(select(func.count(Frame.id))) == 6
        assert session.scalar(select(func.count(Category.id))) == len(load_categories())
        assert session.scalar(select(func.count(Unit.id))) == 3
    assert {jpeg[:1] for *_, jpeg in _snapshot(url)} == {b"b"}


def test_rerun_replaces_units_and_their_annotations(url, tmp_path):
    _write(url, b"a", tmp_path=tmp_path)
    with session_factory(upgrade_db(url))() as session:
        campaign_id = add_campaign(session, session.scalar(select(Run.id)))
    with session_factory(upgrade_db(url)).begin() as session:
        annotator = Annotator(name="ann", password_hash="x")
        session.add(annotator)
        session.flush()
        session.add(Annotation(campaign_id=campaign_id, unit_id=session.scalar(select(Unit.id).limit(1)),
                               annotator_id=annotator.id, answer="yes"))
    _write(url, b"b", tmp_path=tmp_path)
    with session_factory(upgrade_db(url))() as session:
        assert session.scalar(select(func.count(Annotation.id))) == 0
        assert session.scalar(select(func.count(UnitImage.id))) == 12


def test_failure_mid_write_leaves_the_database_as_it_was(url, tmp_path):
    _write(url, b"a", tmp_path=tmp_path)
    before = _snapshot(url)
    with pytest.raises(RuntimeError, match="extraction failed"):
        _write(url, b"b", fail_at=2, tmp_path=tmp_path)
    assert _snapshot(url) == before


def test_killed_extraction_leaves_the_database_as_it_was(url, tmp_path):
    _write(url, b"a", tmp_path=tmp_path)
    before = _snapshot(url)
    # A child process rewrites the units and is killed (SIGKILL) halfway through the unit stream.
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        sys.path[:0] = [{os.getcwd()!r}, {os.path.join(os.getcwd(), "tests")!r}]
        import tests.test_store as t
        from backend.db import store
        def dying(tag, fail_at=None):
            for index in range(3):
                if index == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield store.UnitRecord(index, [store.UnitImageRecord(r, 1.0, b"x") for r in range(4)])
        t._units = dying
        t._write({url!r}, b"b", tmp_path=Path({str(tmp_path)!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd())
    assert result.returncode == -signal.SIGKILL
    upgrade_db.cache_clear()
    assert _snapshot(url) == before


def test_auto_labels_are_stored_on_units(url, tmp_path):
    _write(url, b"a", tmp_path=tmp_path)
    with session_factory(upgrade_db(url)).begin() as session:
        labelled = store.write_auto_labels(session, tmp_path / "run", "conv5", [
            store.AutoLabel(0, "dog", 0.75, 0.3), store.AutoLabel(1, None, 0.0, 0.0)])
    assert labelled == 1
    with session_factory(upgrade_db(url))() as session:
        unit = session.scalar(select(Unit).where(Unit.index == 0))
        assert (unit.auto_category.name, unit.auto_precision) == ("dog", 0.75)
    with session_factory(upgrade_db(url)).begin() as session, pytest.raises(LookupError, match="no such run"):
        store.write_auto_labels(session, tmp_path / "other", "conv5", [])


def test_a_new_database_is_created_by_whichever_command_opens_it_first(tmp_path):
    """`ambient user add` or `ambient serve` on a new SQLite file creates the current schema; only a stale
    or foreign schema is refused (with what to run); processes opening one new file at once all get it."""
    from typer.testing import CliRunner

    from backend.cli import app
    from backend.db.session import current_revision, head_revision, make_engine

    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'new' / 'fresh.db'}"            # its folder does not exist yet either
    added = runner.invoke(app, ["user", "add", "ann", "--password", "a long passphrase", "--db", url])
    assert added.exit_code == 0, added.output
    assert current_revision(make_engine(url)) == head_revision()
    with session_factory(make_engine(url))() as session:
        assert session.scalar(select(Annotator.name)) == "ann"

    served = f"sqlite:///{tmp_path / 'served.db'}"
    with running_server(served) as base:
        assert httpx.get(f"{base}/login").status_code == 200
    assert current_revision(make_engine(served)) == head_revision()

    opened_at_once = f"sqlite:///{tmp_path / 'raced.db'}"
    opener = f"from backend.db.session import open_db; open_db({opened_at_once!r})"
    processes = [subprocess.Popen([sys.executable, "-c", opener], cwd=REPO, stderr=subprocess.PIPE) for _ in range(4)]
    assert [(p.wait(timeout=120), p.stderr.read().decode()[-500:]) for p in processes] == [(0, "")] * 4
    assert current_revision(make_engine(opened_at_once)) == head_revision()


def test_a_stale_or_foreign_schema_is_refused_until_ambient_db_upgrade(tmp_path):
    from alembic import command
    from typer.testing import CliRunner

    from backend.cli import app
    from backend.db.session import SchemaBehind, alembic_config, make_engine, open_db

    url = f"sqlite:///{tmp_path / 'stale.db'}"
    command.upgrade(alembic_config(url), "head")
    command.downgrade(alembic_config(url), "-1")                      # as a database of the previous version is
    with pytest.raises(SchemaBehind, match="ambient db upgrade"):
        open_db(url)
    runner = CliRunner()
    refused = runner.invoke(app, ["user", "add", "ann", "--password", "a long passphrase", "--db", url])
    assert refused.exit_code == 1 and "ambient db upgrade" in refused.output and "Traceback" not in refused.output
    upgraded = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert upgraded.exit_code == 0 and "at revision" in upgraded.output
    open_db.cache_clear()
    assert open_db(url) is not None

    foreign = f"sqlite:///{tmp_path / 'other.db'}"
    with make_engine(foreign).begin() as connection:
        connection.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaBehind, match="not an Ambient database"):
        open_db(foreign)
    with make_engine(foreign).connect() as connection:                 # left as it was
        assert connection.exec_driver_sql("SELECT name FROM sqlite_master").scalars().all() == ["notes"]


def test_the_revisions_open_db_reads_without_alembic_are_alembics(url):
    """open_db reads the head from the revision files' lines and the database's revision with SQL (Alembic
    is not imported at the app's start): the answers Alembic's ScriptDirectory and MigrationContext give."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from backend.db.session import alembic_config, current_revision, head_revision, make_engine

    config, engine = alembic_config(url), make_engine(url)

    def alembic_current() -> str | None:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    head = ScriptDirectory.from_config(config).get_current_head()
    assert head_revision() == head
    assert current_revision(engine) is None and alembic_current() is None           # no alembic_version table
    command.upgrade(config, "head")
    command.downgrade(config, "-1")
    assert current_revision(engine) == alembic_current() != head
    command.upgrade(config, "head")
    assert current_revision(engine) == alembic_current() == head
    with engine.begin() as connection:                                                 # the table there, empty
        connection.execute(text("DELETE FROM alembic_version"))
    assert current_revision(engine) is None and alembic_current() is None
    engine.dispose()

# --- Issue 25, item 7: the database holds password and token hashes and the cookie key.

@pytest.mark.skipif(not ON_SQLITE, reason="SQLite files only")
def test_a_new_sqlite_database_and_its_wal_are_readable_by_their_owner_only(tmp_path):
    path = tmp_path / "new" / "ambient.db"
    engine = upgrade_db(f"sqlite:///{path}")
    with engine.connect() as connection:        # WAL and shared memory exist while a connection is open
        connection.execute(text("SELECT 1"))
        files = [path, path.with_name("ambient.db-wal"), path.with_name("ambient.db-shm")]
        assert all(f.exists() for f in files)
        assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}


def test_the_token_expiry_migration_gives_old_tokens_30_days_and_refuses_names_differing_by_case(url):
    from alembic import command
    from alembic.script import ScriptDirectory

    from backend.db.session import alembic_config, make_engine

    engine = make_engine(url)
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "e7f2b4c6d8a1")       # before tokens expired
        connection.execute(text("INSERT INTO annotators (id, name, password_hash, is_admin, created_at) "
                                "VALUES (1, 'ann', 'x', false, '2026-12-01 10:00:00')"))
        connection.execute(text("INSERT INTO api_tokens (annotator_id, name, token_hash, scope, created_at) "
                                "VALUES (1, 'old', 'h', 'read', '2026-12-01 10:00:00')"))
        connection.execute(text("INSERT INTO annotators (id, name, password_hash, is_admin, created_at) "
                                "VALUES (2, 'ANN', 'x', false, '2026-12-01 10:00:00')"))
        # Up to the revision before it: SQLite does not roll back the DDL of a migration that failed.
        command.upgrade(config, ScriptDirectory.from_config(config).get_revision("c1d5e8a9f2b7").down_revision)
    with pytest.raises(RuntimeError, match="differ only by case: ann"), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    with engine.begin() as connection:
        connection.execute(text("UPDATE annotators SET name = 'ann2' WHERE id = 2"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        expires = connection.execute(text("SELECT expires_at FROM api_tokens")).scalar()
    assert str(expires).startswith("2026-12-31 10:00:00")
    engine.dispose()
