"""Faults: the server killed with SIGKILL mid-load loses no acknowledged annotation and stores none
twice; a read-only database, a full disk or a bug answer with a clear page, never a traceback."""
from __future__ import annotations

import errno
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app_helpers import ON_SQLITE, PASSWORD, REPO, add_user, csrf_of, login, seed_run, sqlite_only
from backend.app import create_app
from backend.app import units as unit_task
from backend.config import Settings
from backend.db.models import Annotation, Annotator
from backend.db.session import open_db, session_factory, upgrade_db

ANNOTATORS = 12
LOAD_SECONDS = float(os.environ.get("AMBIENT_KILL_SECONDS", "3"))


def start_server(url: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--db", url, "--port", str(port)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=1)
            return process
        except httpx.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def submit_until_refused(base: str, name: str, acknowledged: list, sent: list) -> None:
    """Annotate as fast as the server answers; stop at the first connection error (the kill)."""
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            client.post("/login", data={"name": name, "password": PASSWORD,
                                        "csrf_token": csrf_of(client.get("/login").text)})
            token = csrf_of(client.get("/login").text)
            while True:
                page = client.post("/annotate", data={"csrf_token": token}, follow_redirects=True)
                match = re.search(r"/units/(\d+)$", str(page.url))
                if match is None:
                    return
                unit = int(match.group(1))
                sent.append((name, unit))
                response = client.post(f"/units/{unit}/annotation",
                                       data={"answer": "no", "csrf_token": token})
                if response.status_code == 200:
                    acknowledged.append((name, unit))
    except httpx.TransportError:
        return


@pytest.mark.timeout(180)
def test_sigkill_mid_load_keeps_every_acknowledged_annotation_once(tmp_path):
    url = seed_run(tmp_path, n_units=300, n_images=2)
    for i in range(ANNOTATORS):
        add_user(url, f"k{i:02d}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(url, port)
    acknowledged, sent = [], []
    threads = [threading.Thread(target=submit_until_refused, args=(base, f"k{i:02d}", acknowledged, sent))
               for i in range(ANNOTATORS)]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_SECONDS)
    server.send_signal(signal.SIGKILL)           # no shutdown, no flush: requests are cut mid-flight
    server.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=60)
    assert len(acknowledged) >= ANNOTATORS, f"only {len(acknowledged)} answers before the kill"

    server = start_server(url, port)             # the same database, as after a crash
    try:
        if ON_SQLITE:                            # the file itself is intact
            with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
                assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with session_factory(upgrade_db(url))() as db:
            stored = [tuple(row) for row in db.execute(select(Annotator.name, Annotation.unit_id).join(Annotator))]
        assert set(acknowledged) <= set(stored)                   # nothing acknowledged is lost
        assert len(stored) == len(set(stored))                     # nothing is stored twice
        assert set(stored) <= set(sent)                            # nothing appears that was not sent
        # Re-sending what was in flight at the kill (a browser's retry) never stores it twice.
        with httpx.Client(base_url=base, timeout=30) as client:
            name, unit = next(iter(sorted(set(sent))))
            client.post("/login", data={"name": name, "password": PASSWORD,
                                        "csrf_token": csrf_of(client.get("/login").text)})
            token = csrf_of(client.get("/login").text)
            for name_, unit in sorted(set(sent)):
                if name_ != name:
                    continue
                response = client.post(f"/units/{unit}/annotation", data={"answer": "no", "csrf_token": token})
                assert response.status_code in (200, 409), response.text
        with session_factory(upgrade_db(url))() as db:
            count = db.scalar(select(func.count()).select_from(Annotation))
            distinct = db.scalar(select(func.count()).select_from(
                select(Annotation.unit_id, Annotation.annotator_id).distinct().subquery()))
        assert count == distinct
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.fixture()
def app_url(tmp_path):
    url = seed_run(tmp_path)
    add_user(url, "ann")
    return url


def _take_a_unit(client: TestClient) -> tuple[str, int]:
    """Log in as ann and reserve the next unit; (CSRF token, unit id)."""
    token = login(client, "ann")
    taken = client.post("/annotate", data={"csrf_token": token}, follow_redirects=False)
    return token, int(taken.headers["location"].rsplit("/", 1)[1])


def _answer(client: TestClient, token: str, unit: int, accept: str = "application/json"):
    return client.post(f"/units/{unit}/annotation", data={"answer": "no", "csrf_token": token},
                       headers={"accept": accept}, follow_redirects=False)


def _assert_clear_page(response, status: int, phrase: str) -> None:
    assert response.status_code == status, response.text[:500]
    body = response.text
    assert phrase in body
    for leak in ("Traceback", "sqlalchemy", "sqlite3", "File \"/", "OperationalError"):
        assert leak not in body, leak


def _query_only(connection, _record) -> None:
    connection.execute("PRAGMA query_only=ON")


@sqlite_only   # makes the database read-only with SQLite's PRAGMA query_only
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_read_only_database_gives_a_clear_error(app_url, accept):
    with TestClient(create_app(Settings(database_url=app_url))) as client:
        token, unit = _take_a_unit(client)
        engine = open_db(app_url)          # the engine the app runs on
        # The file turned read-only under a running server (chmod does not bind root, query_only does):
        # SQLite then fails every write with SQLITE_READONLY, as for a read-only file or mount.
        event.listen(engine, "connect", _query_only)
        engine.dispose()
        try:
            _assert_clear_page(_answer(client, token, unit, accept), 503, "read-only")
            _assert_clear_page(client.post("/annotate", data={"csrf_token": token}, headers={"accept": accept}),
                               503, "read-only")
        finally:
            event.remove(engine, "connect", _query_only)
            engine.dispose()
        assert _answer(client, token, unit).status_code == 200          # writable again: saved


def _commit_fails(error: Exception):
    def commit(_self):
        raise error
    return commit


@pytest.mark.parametrize("error", [
    OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full")),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=["sqlite-full", "enospc"])
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_full_disk_at_commit_gives_a_clear_error_and_saves_nothing(app_url, monkeypatch, error, accept):
    with TestClient(create_app(Settings(database_url=app_url))) as client:
        token, unit = _take_a_unit(client)
        monkeypatch.setattr(Session, "commit", _commit_fails(error))   # the commit boundary of every write
        response = _answer(client, token, unit, accept)
        monkeypatch.undo()
        _assert_clear_page(response, 503, "disk is full")
        with session_factory(upgrade_db(app_url))() as db:
            assert db.scalar(select(func.count()).select_from(Annotation)) == 0
        # Once there is space again the same answer goes through.
        assert _answer(client, token, unit).status_code == 200


def test_a_bug_gives_an_error_page_not_a_traceback(app_url, monkeypatch):
    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a bug in the queue")
    monkeypatch.setattr(unit_task, "reserve_next", broken)          # what POST /annotate calls
    with TestClient(create_app(Settings(database_url=app_url)), raise_server_exceptions=False) as client:
        token = login(client, "ann")
        response = client.post("/annotate", data={"csrf_token": token}, headers={"accept": "text/html"})
        _assert_clear_page(response, 500, "Something went wrong")
        assert "ZeroDivisionError" not in response.text and "a bug in the queue" not in response.text
