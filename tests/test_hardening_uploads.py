"""Uploads and the listening limits (security round four, items 4, 9 and 10): a multipart body is parsed only
after the login check and never touches the disk; a GET spends no prediction; the limits and the synthesis
jobs hold across two server processes on one database."""
from __future__ import annotations

import io
import tempfile
import time
import wave
from datetime import timedelta

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select, update
from starlette.formparsers import MultiPartParser

from app_helpers import add_user, database_url, login, running_server
from backend.app import create_app
from backend.app import listen_limits as limits
from backend.app.errors import TaskError
from backend.app.reservations import utcnow
from backend.config import Settings
from backend.db.models import Annotator, Run, SynthesisJob, UploadUsage
from backend.db.session import session_factory, upgrade_db
from listen_helpers import make_listen_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_listen_run(tmp_path_factory.mktemp("uploads"))


@pytest.fixture(scope="module")
def app(run):
    return create_app(Settings(database_url=run.url))


def _png(seed: int = 1) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _usage(url: str, name: str) -> int:
    with session_factory(upgrade_db(url))() as db:
        return db.scalar(select(func.count(UploadUsage.id)).join(Annotator, Annotator.id == UploadUsage.annotator_id)
                         .where(Annotator.name == name))


# --- Item 4: the login check comes before the body is parsed, and the body stays in memory

def test_an_unauthenticated_upload_is_refused_before_its_body_is_parsed(app, run, monkeypatch):
    parsed = []
    original = MultiPartParser.parse

    async def recorded(self):
        parsed.append(self)
        return await original(self)

    monkeypatch.setattr(MultiPartParser, "parse", recorded)
    # A body that does not parse at all: read, it would be a 400.
    broken = {"content": b"--x\r\nnot a part", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}
    with TestClient(app) as client:
        assert client.post(f"/api/v1/runs/{run.run_id}/predict", **broken).status_code == 401
        page = client.post(f"/runs/{run.run_id}/listen", follow_redirects=False, content=broken["content"],
                           headers={**broken["headers"], "Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        upload = client.post(f"/api/v1/runs/{run.run_id}/predict", files={"image": ("a.png", _png(), "image/png")})
        assert upload.status_code == 401
        assert parsed == []
        csrf = login(client, "ann")         # logged in, the same broken body is read, and refused as what it is
        refused = client.post(f"/api/v1/runs/{run.run_id}/predict", **broken)
        assert refused.status_code == 400 and len(parsed) == 1
        assert client.post(f"/api/v1/runs/{run.run_id}/predict", files={"image": ("a.png", _png(), "image/png")},
                           headers={"X-CSRF-Token": csrf}).status_code == 200


def test_an_upload_over_1_mib_never_touches_the_disk(app, run, monkeypatch):
    created = []
    original = tempfile.TemporaryFile

    def recorded(*args, **kwargs):      # a SpooledTemporaryFile rolls over to disk through this
        created.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recorded)
    big = _png() + b"\0" * (3 * 2**20)          # a PNG with 3 MiB after its end: still an image
    with TestClient(app) as client:
        csrf = login(client, "ann")
        api = client.post(f"/api/v1/runs/{run.run_id}/predict", files={"image": ("big.png", big, "image/png")},
                          headers={"X-CSRF-Token": csrf})
        page = client.post(f"/runs/{run.run_id}/listen", data={"csrf_token": csrf},
                           files={"image": ("big.png", big, "image/png")})
    assert api.status_code == 200 and page.status_code == 200, (api.text[:300], page.text[:300])
    assert created == []


# --- Item 10: a GET predicts nothing and spends nothing

def test_a_get_never_predicts_and_picking_a_pool_frame_is_a_checked_post(app, run):
    add_user(run.url, "picker")
    with TestClient(app) as client:
        csrf = login(client, "picker")
        page = client.get(f"/runs/{run.run_id}/listen?frame=3")
        assert page.status_code == 200 and 'id="heatmap"' not in page.text
        assert 'name="frame" value="3"' in page.text and 'id="pool-form"' in page.text
        assert _usage(run.url, "picker") == 0
        forged = client.post(f"/runs/{run.run_id}/listen", data={"frame": "3"})
        assert forged.status_code == 403 and _usage(run.url, "picker") == 0
        picked = client.post(f"/runs/{run.run_id}/listen", data={"frame": "3", "csrf_token": csrf})
        assert picked.status_code == 200 and "frame 3" in picked.text and 'id="heatmap"' in picked.text
        assert _usage(run.url, "picker") == 2          # one prediction, and its bytes
        bad = client.post(f"/runs/{run.run_id}/listen", data={"frame": "x", "csrf_token": csrf})
        assert bad.status_code == 422


# --- Item 9: the limits are the database's, whichever process counts

@pytest.fixture()
def url(tmp_path):
    url = database_url(tmp_path)
    add_user(url, "ann")
    add_user(url, "bob")
    return url


def _sessions(url: str):
    return session_factory(upgrade_db(url))


def _account(url: str, name: str) -> int:
    with _sessions(url)() as db:
        return db.scalar(select(Annotator.id).where(Annotator.name == name))


def test_prediction_slots_are_shared_and_a_dead_holders_slot_expires(url, monkeypatch):
    monkeypatch.setattr(limits, "SLOT_WAIT_SECONDS", 0.3)
    settings = Settings(database_url=url, predict_at_once=1)
    one, other = limits.PredictionSlots(settings, _sessions(url)), limits.PredictionSlots(settings, _sessions(url))
    with one.held():          # `other` stands for another process: it shares nothing but the database
        with pytest.raises(TaskError) as busy, other.held():
            pass
        assert busy.value.status == 503 and busy.value.headers["Retry-After"]
    with other.held():        # freed on leaving the block
        pass
    holder = one.held()
    holder.__enter__()        # a process that dies holding it: the slot comes back when its lease ends
    monkeypatch.setattr(limits, "utcnow", lambda: utcnow() + limits.SLOT_LEASE + timedelta(seconds=1))
    with other.held():
        pass


def test_an_abandoned_synthesis_stops_counting_after_a_minute(url):
    sessions, ann = _sessions(url), _account(url, "ann")
    settings = Settings(database_url=url, synthesis_queue=1)
    with sessions() as db:       # a prediction belongs to a run
        db.add(Run(id=1, name="r", run_dir="/nowhere/r", model_kind="caffenet-bn"))
        db.commit()
    first = limits.remember_prediction(sessions, ann, 1, np.ones(502))
    job, texture = limits.queue_synthesis(settings, sessions, ann, first)
    assert job.state == "queued" and texture.tolist() == [1.0] * 502
    with pytest.raises(TaskError) as again:
        limits.queue_synthesis(settings, sessions, ann, first)
    assert again.value.status == 429
    bob = _account(url, "bob")
    with pytest.raises(TaskError) as not_his:
        limits.queue_synthesis(settings, sessions, bob, first)
    assert not_his.value.status == 404
    with pytest.raises(TaskError) as full:     # the queue holds one, for everyone
        limits.queue_synthesis(settings, sessions, bob, limits.remember_prediction(sessions, bob, 1, np.ones(502)))
    assert full.value.status == 503
    with sessions() as db:                     # its process died: no heartbeat for over a minute
        db.execute(update(SynthesisJob).values(updated_at=utcnow() - timedelta(minutes=2)))
        db.commit()
    assert limits.synthesis_job(sessions, ann, job.id).state == "failed"
    assert limits.queue_synthesis(settings, sessions, ann, first)[0].state == "queued"
    with sessions() as db:
        assert db.get(SynthesisJob, job.id).state == "failed"


@pytest.fixture(scope="module")
def two_servers(run):
    """Two `ambient serve` processes on the run's database, as two uvicorn workers would be."""
    env = {"AMBIENT_PREDICT_PER_MINUTE": "3", "AMBIENT_SYNTHESIS_SECONDS": "0.2"}
    with running_server(run.url, env) as first, running_server(run.url, env) as second:
        yield first, second


def test_limits_and_syntheses_hold_across_two_server_processes(run, two_servers):
    first, second = two_servers
    add_user(run.url, "shared")
    with httpx.Client(base_url=first, timeout=120) as client:      # one login: the sessions are the database's
        csrf = login(client, "shared")
        headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}

        def predict(base: str) -> httpx.Response:
            return client.post(f"{base}/api/v1/runs/{run.run_id}/predict", headers=headers,
                               files={"image": ("a.png", _png(), "image/png")})

        answers = [predict(base) for base in (first, second, first, second)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429], answers[-1].text[:300]
        assert "at most 3 a minute" in answers[-1].json()["detail"]

        prediction = answers[0].json()["prediction"]          # remembered by the first process
        started = client.post(f"{second}/listen/synthesis", json={"prediction": prediction}, headers=headers)
        assert started.status_code == 200, started.text
        job = started.json()["id"]
        again = client.post(f"{first}/listen/synthesis", json={"prediction": prediction}, headers=headers)
        assert again.status_code == 429 and "under way" in again.json()["detail"]
        deadline = time.monotonic() + 120
        while (record := client.get(f"{first}/listen/synthesis/{job}", headers=headers).json())["state"] != "done":
            assert record["state"] in ("queued", "running") and time.monotonic() < deadline, record
            time.sleep(0.2)
        assert record["done"] == record["total"] > 0
        audio = client.get(f"{first}{record['audio_url']}")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(audio.content)) as file:
        assert file.getnframes() / file.getframerate() == pytest.approx(0.2, abs=0.01)
