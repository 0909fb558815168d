"""Accounts, sessions, CSRF and admin-only pages."""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from app_helpers import PASSWORD, csrf_of, login
from backend.app import create_app
from backend.app.main import SESSION_COOKIE
from backend.app.security import hash_password, normalise_category_name, verify_password
from backend.cli import app as cli
from backend.config import Settings
from backend.db.models import Annotator, Base, LoginSession
from backend.db.session import upgrade_db, session_factory


@pytest.fixture()
def client(app_url):
    with TestClient(create_app(Settings(database_url=app_url))) as c:
        yield c


def test_password_hash_is_argon2_and_verifies():
    stored = hash_password("s3cret-pass")
    assert stored.startswith("$argon2id$") and "s3cret-pass" not in stored
    assert verify_password(stored, "s3cret-pass")
    assert not verify_password(stored, "wrong")
    assert not verify_password("not a hash", "s3cret-pass")


@pytest.mark.parametrize("raw", ["<script>alert(1)</script>", "a" * 65, "  ", "x;drop", "café\u202e"])
def test_hostile_category_names_are_rejected(raw):
    with pytest.raises(ValueError):
        normalise_category_name(raw)


def test_pages_need_login(client):
    response = client.get("/annotate", follow_redirects=False, headers={"accept": "text/html"})
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/annotate")
    assert client.get("/api/runs/1/detectors.json").status_code == 401


def test_wrong_password_is_refused(client):
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": "ann", "password": "nope", "csrf_token": token})
    assert response.status_code == 401 and "Wrong name or password" in response.text
    assert client.get("/annotate", follow_redirects=False).status_code == 401


def test_login_without_csrf_token_is_forbidden(client):
    client.get("/login")
    response = client.post("/login", data={"name": "ann", "password": PASSWORD})
    assert response.status_code == 403 and "security token" in response.json()["detail"]


def test_forged_session_cookie_is_ignored(client):
    client.cookies.set("ambient_session", "eyJ1aWQiOiAyfQ==.forged.signature")
    assert client.get("/api/runs").status_code == 401


def test_annotator_gets_403_on_admin_pages_and_api(client):
    login(client, "ann")
    for path in ("/results", "/admin/review", "/admin/categories", "/admin/users", "/api/runs",
                 "/api/runs/1/detectors.csv", "/api/runs/1/table1.json"):
        assert client.get(path).status_code == 403, path
    assert client.get("/annotate", follow_redirects=False).status_code == 200


def test_admin_reaches_admin_pages(client):
    login(client, "boss")
    for path in ("/results", "/admin/review", "/admin/categories", "/admin/users", "/api/runs"):
        assert client.get(path).status_code == 200, path


def test_logout_ends_the_session_and_needs_csrf(client):
    token = login(client, "ann")
    assert client.post("/logout", data={}).status_code == 403
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert client.get("/annotate", follow_redirects=False).status_code == 401


def logged_in(client: TestClient) -> bool:
    """Whether the client's cookie is a live admin session ("boss"): the export API answers 200, else 401."""
    status = client.get("/api/runs").status_code
    assert status in (200, 401), status
    return status == 200


def cookie_copy(client: TestClient) -> TestClient:
    """Another client holding a copy of `client`'s session cookie, as a thief or a second tab would."""
    copy = TestClient(client.app)
    copy.cookies.set(SESSION_COOKIE, client.cookies.get(SESSION_COOKIE))
    return copy


def session_of(client: TestClient) -> dict:
    """The signed cookie's payload (base64 JSON before the timestamp and signature)."""
    payload = client.cookies.get(SESSION_COOKIE).split(".")[0]
    return json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))


def account_id(url: str, name: str) -> int:
    with session_factory(upgrade_db(url))() as db:
        return db.scalar(select(Annotator.id).where(Annotator.name == name))


def test_a_copy_of_the_cookie_taken_before_logout_is_worthless_after_it(client):
    token = login(client, "boss")
    with cookie_copy(client) as copy:
        assert logged_in(copy)                  # the same session while it lasts
        assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
        page = copy.get("/results", headers={"accept": "text/html"}, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert copy.get("/api/runs").status_code == 401
        assert copy.post("/admin/users", data={"name": "mallory", "csrf_token": token}).status_code in (401, 403)


def test_two_logins_of_one_account_are_independent(client):
    with TestClient(client.app) as other:
        token = login(client, "boss")
        login(other, "boss")
        assert session_of(client)["sid"] != session_of(other)["sid"]
        client.post("/logout", data={"csrf_token": token})
        assert not logged_in(client) and logged_in(other)


def test_the_database_keeps_only_a_hash_of_the_session_token(client, app_url):
    login(client, "boss")
    token = session_of(client)["sid"]
    with session_factory(upgrade_db(app_url))() as db:
        assert hashlib.sha256(token.encode()).hexdigest() in db.scalars(select(LoginSession.token_hash)).all()
        for table in Base.metadata.sorted_tables:          # the raw token is nowhere in the database
            for row in db.execute(select(table)):
                assert token not in repr(tuple(row)), table.name


def test_sessions_expire_on_the_server_too(client, app_url):
    login(client, "boss")
    assert logged_in(client)
    with session_factory(upgrade_db(app_url))() as db:
        age = timedelta(days=Settings().session_days, seconds=1)
        db.execute(update(LoginSession).values(created_at=LoginSession.created_at - age))
        db.commit()
    assert not logged_in(client)
    assert client.cookies.get(SESSION_COOKIE) is None      # the stale session was cleared from the browser


def test_an_admins_password_change_ends_the_accounts_other_sessions(client, app_url):
    token = login(client, "boss")
    with TestClient(client.app) as ann, TestClient(client.app) as ann_phone, TestClient(client.app) as boss_laptop:
        for c in (ann, ann_phone):
            login(c, "ann")
        login(boss_laptop, "boss")
        ann_id, boss_id = account_id(app_url, "ann"), account_id(app_url, "boss")
        page = client.post(f"/admin/users/{ann_id}/password", data={"password": "", "your_password": PASSWORD,
                                                                    "csrf_token": token})
        assert page.status_code == 200 and "New password for ann" in page.text
        new_password = page.text.split('id="new-password">')[1].split("<")[0]
        for c in (ann, ann_phone):
            assert c.get("/annotate", follow_redirects=False).status_code == 401
        assert logged_in(boss_laptop)           # another account's sessions live on
        login(ann, "ann", new_password)
        assert ann.get("/annotate", follow_redirects=False).status_code == 200
        old = ann_phone.post("/login", data={"name": "ann", "password": PASSWORD,
                                             "csrf_token": csrf_of(ann_phone.get("/login").text)})
        assert old.status_code == 401
        # An admin changing their own password stays logged in here and is logged out elsewhere.
        def set_password(account: int, password: str, mine: str = PASSWORD) -> int:
            return client.post(f"/admin/users/{account}/password",
                               data={"password": password, "your_password": mine, "csrf_token": token}).status_code

        assert set_password(boss_id, "a new secret") == 200
        assert logged_in(client) and not logged_in(boss_laptop)
        assert set_password(ann_id, "short", "a new secret") == 422 and set_password(999999, "", "a new secret") == 404


def test_user_password_command_ends_the_accounts_sessions(client, app_url):
    login(client, "boss")
    runner = CliRunner()
    result = runner.invoke(cli, ["user", "password", "boss", "--password", "long enough tulip", "--db", app_url])
    assert result.exit_code == 0 and "Changed the password of boss" in result.output
    assert not logged_in(client)
    login(client, "boss", "long enough tulip")
    result = runner.invoke(cli, ["user", "password", "boss", "--db", app_url])
    assert result.exit_code == 0 and "New password for boss: " in result.output
    assert not logged_in(client)
    login(client, "boss", result.output.rsplit(": ", 1)[1].strip())
    for args, message in ((["nobody"], "no account called 'nobody'"), (["boss", "--password", "short"], "at least 8")):
        result = runner.invoke(cli, ["user", "password", *args, "--db", app_url])
        assert result.exit_code == 2 and message in result.output


def test_login_redirect_stays_on_this_site(client):
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": token,
                                           "next": "//evil.example/x"}, follow_redirects=False)
    assert response.headers["location"] == "/"


def test_admin_adds_a_user_who_can_log_in(client, app_url):
    token = login(client, "boss")
    mine = {"csrf_token": token, "your_password": PASSWORD}
    page = client.post("/admin/users", data={"name": "newbie", "password": "", **mine}).text
    password = page.split('id="new-password">')[1].split("<")[0]
    assert client.post("/admin/users", data={"name": "newbie", **mine}).status_code == 409
    assert client.post("/admin/users", data={"name": "<b>x</b>", **mine}).status_code == 422
    with TestClient(client.app) as other:
        login(other, "newbie", password)
        assert other.get("/results").status_code == 403


def test_offline_docs_and_plotly(client):
    page = client.get("/docs").text
    assert "/api/runs/{run_id}/detectors.csv" in page and "cdn" not in page.lower()
    assert "/api/runs/{run_id}/table1.json" in client.get("/openapi.json").json()["paths"]
    script = client.get("/static/plotly.min.js")
    assert script.status_code == 200 and len(script.content) > 1_000_000
    assert client.get("/static/plotly.min.js", headers={"if-none-match": script.headers["etag"]}).status_code == 304
