"""Shared by the web-app tests: a temporary database seeded with a fake run (small JPEGs, WAV clips).

Tests get their database from `database_url`: a SQLite file in the test's tmp_path, or, when
AMBIENT_TEST_DATABASE_URL names a PostgreSQL server (`make test-postgres`), a fresh database there,
dropped after the test by tests/conftest.py."""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import httpx
import numpy as np
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from backend.db import store
from backend.db.models import Annotator, Campaign, Layer, Run, Unit, UnitImage, UnitReservation
from backend.db.session import upgrade_db, session_factory
from model.categories import load_categories
from model.data.dataset import FrameRecord

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
# Argon2 reads its cost from the stored hash: a cheap one keeps logins in tests fast.
PASSWORD_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)

# A server URL (e.g. postgresql+psycopg://postgres@/postgres?host=/tmp/pg) whose user may create databases.
TEST_DATABASE_URL = os.environ.get("AMBIENT_TEST_DATABASE_URL") or None
ON_SQLITE = TEST_DATABASE_URL is None
sqlite_only = pytest.mark.skipif(not ON_SQLITE, reason="SQLite-specific (AMBIENT_TEST_DATABASE_URL is set)")
_created: list[str] = []     # databases made on the test server, dropped by drop_databases


def _admin_engine():
    return create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def database_url(tmp_path: Path, name: str = "ambient.db") -> str:
    """A URL for an empty database: `tmp_path / name` in SQLite, or a new database on the test server."""
    if ON_SQLITE:
        return f"sqlite:///{tmp_path / name}"
    database = f"test_{uuid.uuid4().hex[:20]}"
    engine = _admin_engine()
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        engine.dispose()
    _created.append(database)
    return make_url(TEST_DATABASE_URL).set(database=database).render_as_string(hide_password=False)


_migrated_folders: list[tempfile.TemporaryDirectory] = []


@lru_cache(maxsize=None)
def _migrated_sqlite() -> bytes:
    """An empty SQLite database at the head revision, migrated once per test process."""
    folder = tempfile.TemporaryDirectory(prefix="ambient-migrated-")
    _migrated_folders.append(folder)               # removed when the test process exits
    url = f"sqlite:///{Path(folder.name) / 'migrated.db'}"
    upgrade_db(url).dispose()                      # closing the last connection folds the WAL into the file
    return (Path(folder.name) / "migrated.db").read_bytes()


def migrated_database_url(tmp_path: Path, name: str = "ambient.db") -> str:
    """database_url's database, migrated to the head revision: in SQLite a copy of one migrated once
    (migrating takes about half a second, and the app's tests make hundreds of databases)."""
    url = database_url(tmp_path, name)
    path = tmp_path / name
    if ON_SQLITE and not path.exists():
        # Readable by its owner only, as the app creates its database files.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(_migrated_sqlite())
    upgrade_db(url)
    return url


def created_databases() -> int:
    return len(_created)


def drop_databases(since: int = 0) -> None:
    """Drop the test server's databases made since the `since`-th (FORCE ends engines still connected)."""
    if ON_SQLITE or len(_created) <= since:
        return
    engine = _admin_engine()
    try:
        with engine.connect() as connection:
            while len(_created) > since:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{_created.pop()}" WITH (FORCE)'))
    finally:
        engine.dispose()


def jpeg(color: tuple[int, int, int], size: int = 24, seed: int = 0) -> bytes:
    """A masked-looking picture: a bright disc of `color` on a darkened background."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(c // 5 for c in color))
    x, y, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [size // 4]
    ImageDraw.Draw(image).ellipse((x - r, y - r, x + r, y + r), fill=color)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return out.getvalue()


def write_wav(path: Path, seconds: float = 0.5, rate: int = 8000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(samples.tobytes())


def seed_run(tmp_path: Path, n_units: int = 4, n_images: int = 6, run_name: str = "run-a",
             image_size: int = 24, campaign: bool = True) -> str:
    """A database with one run of `n_units` units of `n_images` images each, in an open default campaign
    (`campaign=False`: in none, so in no queue); returns its URL."""
    url = migrated_database_url(tmp_path)
    data_dir = tmp_path / "data"
    (data_dir / "clips").mkdir(parents=True, exist_ok=True)
    records = []
    for row in range(n_images):
        clip = f"clips/clip_{row:02d}.wav"
        write_wav(data_dir / clip)
        records.append(FrameRecord(frame_id=row, video_id=f"v{row}", video=f"v{row}.mp4", frame_index=0,
                                   time=1.0, image=f"frames/{row}.jpg", clip=clip, split="test", silent=False))
    engine = upgrade_db(url)
    with session_factory(engine)() as db, db.begin():
        store.seed_categories(db, load_categories())
        dataset = store.register_dataset(db, data_dir, records, None, None)
        run = store.upsert_run(db, tmp_path / run_name, "caffenet-bn", "cluster", {}, dataset)
        units = [store.UnitRecord(index=u, images=[
            store.UnitImageRecord(row=i, activation=float(n_images - i), masked_jpeg=jpeg(((70 * u + 90) % 256, (25 * i + 60) % 256, 200), image_size, seed=u * n_images + i))
            for i in range(n_images)]) for u in range(n_units)]
        store.replace_units(db, run, dataset, store.LayerRecord("conv5", n_units, 128, 163.0, 27.0), units)
        run_id = run.id
    if campaign:
        with session_factory(engine)() as db:
            add_campaign(db, run_id)
    return url


def add_campaign(db, run_id: int, name: str | None = None, judges: int = 3, **fields) -> int:
    """An open campaign of the run's conv5 (its default when it has none); returns its id."""
    from backend.app.campaign import CampaignFields, create_campaign

    run_name = db.get(Run, run_id).name
    return create_campaign(db, CampaignFields(name=name or f"{run_name} conv5", run_id=run_id, judges=judges,
                                              open=True, **fields)).id


def default_campaign_id(db, unit_id: int) -> int:
    """The id of the default campaign of the unit's run."""
    return db.scalar(select(Campaign.id).join(Layer, Layer.run_id == Campaign.run_id).join(Unit, Unit.layer_id == Layer.id)
                     .where(Unit.id == unit_id, Campaign.is_default))


def add_user(url: str, name: str, is_admin: bool = False, password_hash: str | None = None) -> None:
    """An account with password PASSWORD."""
    with session_factory(upgrade_db(url))() as db:
        db.add(Annotator(name=name, is_admin=is_admin, password_hash=password_hash or PASSWORD_HASH))
        db.commit()


def submit_held(db, annotator_id: int, unit_id: int, answer: str, category: str | None, marked: list[int]):
    """`submit_annotation` of a unit first held for the annotator, as the queue would have handed it."""
    from backend.app.reservations import utcnow
    from backend.app.units import submit_annotation

    db.add(UnitReservation(campaign_id=default_campaign_id(db, unit_id), unit_id=unit_id, annotator_id=annotator_id,
                           expires_at=utcnow() + timedelta(minutes=30)))
    db.commit()
    return submit_annotation(db, annotator_id, unit_id, answer, category, marked)


def unit_images(url: str, unit_id: int) -> list[int]:
    with session_factory(upgrade_db(url))() as db:
        return list(db.scalars(select(UnitImage.id).where(UnitImage.unit_id == unit_id).order_by(UnitImage.rank)))


def unit_ids(url: str) -> list[int]:
    with session_factory(upgrade_db(url))() as db:
        return list(db.scalars(select(Unit.id).order_by(Unit.id)))


def unit_label(url: str, unit_id: int) -> str:
    """What the pages call the unit with this database id: "conv5 unit 0" (its layer, its 0-based channel)."""
    with session_factory(upgrade_db(url))() as db:
        unit = db.get(Unit, unit_id)
        return f"{unit.layer.name} unit {unit.index}"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log `client` in; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/login").text)


@contextmanager
def running_server(url: str, env: dict[str, str] | None = None, process_out: list | None = None):
    """`ambient serve` on a free loopback port, as its own process (`env`: extra AMBIENT_ settings);
    yields the base URL, and appends the process to `process_out` when given."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--db", url, "--port", str(port)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    if process_out is not None:
        process_out.append(process)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/login", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {process.stdout.read().decode()[-2000:]}")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
