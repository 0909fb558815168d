"""Personal API tokens: made on the profile page or with `ambient user token`, shown once, stored hashed,
revocable; read scope only reads, admin scope (admins only) reaches the admin endpoints; a token request
needs no CSRF token, a cookie request still does."""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from app_helpers import PASSWORD, add_user, login
from backend.app import create_app
from backend.cli import app as cli
from backend.config import Settings
from backend.db.models import Annotator, ApiToken, Category
from backend.db.session import session_factory, upgrade_db


@pytest.fixture()
def app(app_url):
    return create_app(Settings(database_url=app_url))


def make_token(app, name: str, scope: str = "read", **fields) -> str:
    """A token made on `name`'s profile page (as the page shows it, once), with their password."""
    with TestClient(app) as client:
        csrf = login(client, name)
        page = client.post("/profile/tokens", data={"name": f"{scope} script", "scope": scope, "csrf_token": csrf,
                                                    "your_password": PASSWORD, **fields})
        assert page.status_code == 200, page.text
        return re.search(r'id="token-value">([^<]+)<', page.text).group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_is_shown_once_and_stored_only_as_its_hash(app, app_url):
    token = make_token(app, "ann")
    with session_factory(upgrade_db(app_url))() as db:
        rows = db.scalars(select(ApiToken)).all()
    assert [(r.scope, r.token_hash) for r in rows] == [("read", hashlib.sha256(token.encode()).hexdigest())]
    with TestClient(app) as client:
        login(client, "ann")
        page = client.get("/profile").text
        assert "read script" in page and token not in page          # listed, never shown again
    with TestClient(app) as client:                               # a fresh client: no cookie at all
        response = client.get("/api/v1/runs", headers=bearer(token))
        assert response.status_code == 200 and response.json()["items"][0]["name"] == "run-a"
    with session_factory(upgrade_db(app_url))() as db:
        assert db.scalar(select(ApiToken.last_used_at)) is not None


def test_unknown_and_revoked_tokens_are_refused(app):
    token = make_token(app, "ann")
    with TestClient(app) as client:
        assert client.get("/api/v1/runs", headers=bearer(token + "x")).status_code == 401
        assert client.get("/api/v1/runs", headers=bearer("not-a-token")).status_code == 401
        csrf = login(client, "ann")
        token_id = int(re.search(r'id="token-(\d+)"', client.get("/profile").text).group(1))
        assert client.post(f"/profile/tokens/{token_id}/revoke", data={}).status_code == 403    # cookie: CSRF needed
        assert client.post(f"/profile/tokens/{token_id}/revoke", data={"csrf_token": csrf},
                           follow_redirects=False).status_code == 303
    with TestClient(app) as client:
        response = client.get("/api/v1/runs", headers=bearer(token))
        assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_one_cannot_revoke_another_accounts_token(app):
    make_token(app, "boss")
    with TestClient(app) as client:
        csrf = login(client, "ann")
        assert client.post("/profile/tokens/1/revoke", data={"csrf_token": csrf}).status_code == 404
    with TestClient(app) as client:
        login(client, "boss")
        assert 'id="token-1"' in client.get("/profile").text


def test_an_annotators_token_cannot_call_admin_endpoints(app):
    token = make_token(app, "ann")
    with TestClient(app) as client:
        for path in ("/api/runs", "/api/runs/1/detectors.json", "/api/runs/1/annotations.json", "/results"):
            assert client.get(path, headers=bearer(token)).status_code == 403, path
        assert client.get("/api/v1/runs/1/units", headers=bearer(token)).status_code == 200
        csrf = login(client, "ann")
        refused = client.post("/profile/tokens", data={"name": "x", "scope": "admin", "csrf_token": csrf,
                                                       "your_password": PASSWORD})
        assert refused.status_code == 403 and "not an admin" in refused.text


def test_read_scope_reads_only_and_admin_scope_reaches_admin_endpoints(app, app_url):
    read, admin = make_token(app, "boss", "read"), make_token(app, "boss", "admin")
    with session_factory(upgrade_db(app_url))() as db:
        dog = db.scalar(select(Category.id).where(Category.name == "dog"))
    with TestClient(app) as client:
        assert client.get("/api/v1/runs", headers=bearer(read)).status_code == 200
        assert client.get("/api/runs/1/detectors.json", headers=bearer(read)).status_code == 403
        assert client.get("/api/runs/1/detectors.json", headers=bearer(admin)).status_code == 200
        change = f"/admin/categories/{dog}/characteristic"
        # No CSRF token with either: a token request carries no cookie, so none is needed, but read scope cannot write.
        assert client.post(change, data={"characteristic": "false"}, headers=bearer(read)).status_code == 403
        assert client.post(change, data={"characteristic": "false"}, headers=bearer(admin),
                           follow_redirects=False).status_code == 303
    with session_factory(upgrade_db(app_url))() as db:
        assert db.scalar(select(Category.characteristic_sound).where(Category.id == dog)) is False


def test_a_token_request_is_the_tokens_account_whatever_cookie_comes_with_it(app):
    token = make_token(app, "ann")
    with TestClient(app) as client:
        csrf = login(client, "boss")                       # an admin's cookie ...
        assert client.get("/api/runs").status_code == 200
        assert client.get("/api/runs", headers=bearer(token)).status_code == 403     # ... does not lift ann's token
        assert client.get("/api/runs", headers=bearer("amb_unknown")).status_code == 401  # nor a bad one's
        # and a cookie request still needs its CSRF token
        assert client.post("/admin/categories/1/characteristic", data={"characteristic": "true"}).status_code == 403
        assert client.post("/admin/categories/1/characteristic", data={"characteristic": "true", "csrf_token": csrf},
                           follow_redirects=False).status_code == 303


def test_user_token_command(app, app_url):
    runner = CliRunner()
    result = runner.invoke(cli, ["user", "token", "boss", "--admin-scope", "--db", app_url])
    assert result.exit_code == 0, result.output
    assert "admin-scope token for boss" in result.output
    token = result.output.strip().splitlines()[-1]
    result = runner.invoke(cli, ["user", "token", "ann", "--db", app_url])
    assert result.exit_code == 0 and "read-scope token for ann" in result.output
    ann_token = result.output.strip().splitlines()[-1]
    with TestClient(app) as client:
        assert client.get("/api/runs/1/table1.json", headers=bearer(token)).status_code == 200
        assert client.get("/api/runs/1/table1.json", headers=bearer(ann_token)).status_code == 403
        assert client.get("/api/v1/runs/1/layers", headers=bearer(ann_token)).json()["items"][0]["name"] == "conv5"
    for args, message in ((["user", "token", "ann", "--admin-scope"], "not an admin"),
                          (["user", "token", "nobody"], "no account called 'nobody'")):
        result = runner.invoke(cli, [*args, "--db", app_url])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    with session_factory(upgrade_db(app_url))() as db:
        assert sorted(db.scalars(select(ApiToken.scope))) == ["admin", "read"]     # the refused one was not stored


# --- Issue 25, item 2: a stolen token or session does not keep its access.

def test_a_token_made_before_a_password_change_is_refused_after_it(app, app_url):
    ann, boss = make_token(app, "ann"), make_token(app, "boss", "admin")
    with TestClient(app) as client:
        assert client.get("/api/v1/runs", headers=bearer(ann)).status_code == 200
        csrf = login(client, "boss")
        page = client.get("/admin/users").text
        ann_id = int(page.split(">ann<")[1].split('action="/admin/users/')[1].split("/")[0])
        assert client.post(f"/admin/users/{ann_id}/password", data={"password": "", "your_password": PASSWORD,
                                                                    "csrf_token": csrf}).status_code == 200
        response = client.get("/api/v1/runs", headers=bearer(ann))           # reset by another admin
        assert response.status_code == 401 and "revoked" in response.json()["detail"]
        assert client.get("/api/runs", headers=bearer(boss)).status_code == 200
    result = CliRunner().invoke(cli, ["user", "password", "boss", "--db", app_url])     # one's own, by command
    assert result.exit_code == 0, result.output
    with TestClient(app) as client:
        assert client.get("/api/runs", headers=bearer(boss)).status_code == 401
    with session_factory(upgrade_db(app_url))() as db:
        assert db.scalars(select(ApiToken)).all() == []


def test_an_expired_token_is_refused_saying_it_expired(app, app_url):
    token = make_token(app, "ann", days="1")
    with session_factory(upgrade_db(app_url))() as db:
        row = db.scalar(select(ApiToken))
        assert timedelta(hours=23) < row.expires_at - row.created_at <= timedelta(days=1)
        row.expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)
        db.commit()
    with TestClient(app) as client:
        response = client.get("/api/v1/runs", headers=bearer(token))
        assert response.status_code == 401 and "expired" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
        login(client, "ann")              # a write with it, whatever cookie comes along: refused, saying the same
        response = client.post("/annotate", data={}, headers=bearer(token) | {"accept": "application/json"})
        assert response.status_code == 401 and "expired" in response.json()["detail"]
        assert "(expired)" in client.get("/profile").text


def test_tokens_expire_after_the_default_and_at_most_the_maximum(app_url):
    app = create_app(Settings(database_url=app_url, token_days=7, token_max_days=90))
    make_token(app, "ann")
    with session_factory(upgrade_db(app_url))() as db:
        row = db.scalar(select(ApiToken))
        assert timedelta(days=7) - timedelta(minutes=1) < row.expires_at - row.created_at <= timedelta(days=7)
    with TestClient(app) as client:
        csrf = login(client, "ann")
        page = client.get("/profile").text
        assert 'id="token-days">7<' in page and 'id="token-max-days">90<' in page
        for days in ("91", "0", "-1", "many"):
            response = client.post("/profile/tokens", data={"name": "long", "days": days, "csrf_token": csrf,
                                                            "your_password": PASSWORD})
            assert response.status_code == 422 and "days" in response.text, days
    result = CliRunner().invoke(cli, ["user", "token", "ann", "--days", "366", "--db", app_url])   # the default maximum, 365
    assert result.exit_code == 2 and "days" in result.output and "Traceback" not in result.output


def test_every_token_needs_its_makers_password(app, app_url):
    # Issue 34, item 6: a stolen session minted a 365-day read token (an admin's sees unblinded verdicts).
    for name, scopes in (("boss", ("read", "admin")), ("ann", ("read",))):
        with TestClient(app) as client:
            csrf = login(client, name)
            for scope in scopes:
                for given in ({}, {"your_password": "not my password"}):
                    response = client.post("/profile/tokens", data={"name": "x", "scope": scope, "days": "365",
                                                                    "csrf_token": csrf, **given})
                    assert response.status_code == 403 and "your own password" in response.json()["detail"]
    with session_factory(upgrade_db(app_url))() as db:
        assert db.scalars(select(ApiToken)).all() == []                 # none made
    make_token(app, "boss", "admin"), make_token(app, "boss", "read"), make_token(app, "ann")   # with it
    with session_factory(upgrade_db(app_url))() as db:
        assert sorted(db.scalars(select(ApiToken.scope))) == ["admin", "read", "read"]


def test_a_wrong_password_for_a_token_counts_as_a_failed_login(app_url):
    with TestClient(create_app(Settings(database_url=app_url, login_failures=2))) as client:
        csrf = login(client, "ann")
        for _ in range(2):
            response = client.post("/profile/tokens", data={"name": "x", "csrf_token": csrf, "your_password": "guess"})
            assert response.status_code == 403
        response = client.post("/profile/tokens", data={"name": "x", "csrf_token": csrf, "your_password": PASSWORD})
        assert response.status_code == 429 and "Too many failed logins" in response.text


def test_a_new_admin_account_needs_the_admins_password(app, app_url):
    with TestClient(app) as client:
        csrf = login(client, "boss")
        for given in ({}, {"your_password": "not my password"}):
            response = client.post("/admin/users", data={"name": "mallory", "is_admin": "true", "csrf_token": csrf,
                                                         **given})
            assert response.status_code == 403 and "your own password" in response.json()["detail"]
        with session_factory(upgrade_db(app_url))() as db:
            assert db.scalar(select(Annotator).where(Annotator.name == "mallory")) is None
        response = client.post("/admin/users", data={"name": "mallory", "is_admin": "true", "your_password": PASSWORD,
                                                     "csrf_token": csrf})
        assert response.status_code == 200 and 'id="new-password"' in response.text


def test_every_account_change_needs_the_acting_admins_password(app, app_url):
    # Issue 34, item 6: with a stolen session alone, an admin could add annotators, reset one's password
    # (and log in as them), or disable and enable them.
    with TestClient(app) as boss:
        csrf = login(boss, "boss")
        page = boss.get("/admin/users").text
        ann_id = int(page.split(">ann<")[1].split('action="/admin/users/')[1].split("/")[0])
        changes = {"/admin/users": {"name": "annie"},
                   f"/admin/users/{ann_id}/password": {"password": "a fresh secret"},
                   f"/admin/users/{ann_id}/disable": {}, f"/admin/users/{ann_id}/enable": {}}
        for path, fields in changes.items():
            for given in ({}, {"your_password": "not my password"}):
                response = boss.post(path, data={"csrf_token": csrf, **fields, **given})
                assert response.status_code == 403 and "your own password" in response.json()["detail"], path
        with session_factory(upgrade_db(app_url))() as db:                       # nothing was done
            assert db.scalar(select(Annotator).where(Annotator.name == "annie")) is None
            assert db.scalar(select(Annotator.disabled_at).where(Annotator.id == ann_id)) is None
        with TestClient(app) as ann:
            assert login(ann, "ann")                                               # her password is unchanged
        for path, fields in changes.items():
            response = boss.post(path, data={"csrf_token": csrf, "your_password": PASSWORD, **fields})
            assert response.status_code == 200, path
        with TestClient(app) as ann:
            assert login(ann, "ann", "a fresh secret")


# --- Issue 25, item 8: pages that show a secret are not cached.

def test_pages_showing_a_new_token_or_password_are_not_stored(app):
    with TestClient(app) as client:
        csrf = login(client, "boss")
        mine = {"csrf_token": csrf, "your_password": PASSWORD}
        made = client.post("/profile/tokens", data={"name": "x", **mine})
        added = client.post("/admin/users", data={"name": "newbie", **mine})
        page = added.text
        newbie = int(page.split(">newbie<")[1].split('action="/admin/users/')[1].split("/")[0])
        changed = client.post(f"/admin/users/{newbie}/password", data={"password": "", **mine})
        assert 'id="token-value"' in made.text
        assert 'id="new-password"' in added.text and 'id="new-password"' in changed.text
        for response in (made, added, changed):
            assert response.status_code == 200 and response.headers["cache-control"] == "no-store"


def test_disabling_an_account_ends_its_sessions_and_tokens_and_its_logins(app, app_url):
    token = make_token(app, "ann")
    with TestClient(app) as ann, TestClient(app) as boss:
        login(ann, "ann")
        csrf = login(boss, "boss")
        page = boss.get("/admin/users").text
        ann_id = int(page.split(">ann<")[1].split('action="/admin/users/')[1].split("/")[0])
        boss_id = int(page.split(">boss<")[1].split('action="/admin/users/')[1].split("/")[0])
        mine = {"csrf_token": csrf, "your_password": PASSWORD}
        assert boss.post(f"/admin/users/{boss_id}/disable", data=mine).status_code == 409
        response = boss.post(f"/admin/users/{ann_id}/disable", data=mine)
        assert response.status_code == 200 and "ann is disabled" in response.text
        assert ann.get("/api/v1/runs").status_code == 401                               # the session ...
        assert ann.get("/api/v1/runs", headers=bearer(token)).status_code == 401        # ... and the token ended
        page = ann.post("/login", data={"name": "ann", "password": PASSWORD,
                                        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"',
                                                                ann.get("/login").text).group(1)})
        assert page.status_code == 403 and "disabled" in page.text
        assert boss.post(f"/admin/users/{ann_id}/enable", data=mine).status_code == 200
        login(ann, "ann")
        assert ann.get("/api/v1/runs").status_code == 200
        assert ann.get("/api/v1/runs", headers=bearer(token)).status_code == 401        # revoked for good
    result = CliRunner().invoke(cli, ["user", "disable", "ann", "--db", app_url])
    assert result.exit_code == 0 and "ann is disabled" in result.output
    with TestClient(app) as ann:
        page = ann.post("/login", data={"name": "ann", "password": PASSWORD,
                                        "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"',
                                                                ann.get("/login").text).group(1)})
        assert page.status_code == 403


def test_disabling_or_enabling_an_admin_needs_the_acting_admins_password(app, app_url):
    add_user(app_url, "boss2", is_admin=True)
    with TestClient(app) as boss:
        csrf = login(boss, "boss")
        page = boss.get("/admin/users").text
        boss2 = int(page.split(">boss2<")[1].split('action="/admin/users/')[1].split("/")[0])
        for action in ("disable", "enable"):
            refused = boss.post(f"/admin/users/{boss2}/{action}", data={"csrf_token": csrf})
            assert refused.status_code == 403 and "your own password" in refused.json()["detail"]
            done = boss.post(f"/admin/users/{boss2}/{action}", data={"csrf_token": csrf, "your_password": PASSWORD})
            assert done.status_code == 200 and f"boss2 is {action}d" in done.text
