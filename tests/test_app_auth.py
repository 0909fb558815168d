"""Accounts, sessions, CSRF and admin-only pages."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app_helpers import PASSWORD, csrf_of, login
from backend.app import create_app
from backend.app.security import hash_password, normalise_category_name, verify_password
from backend.config import Settings


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
    assert client.get("/annotate", follow_redirects=False).status_code == 303


def test_admin_reaches_admin_pages(client):
    login(client, "boss")
    for path in ("/results", "/admin/review", "/admin/categories", "/admin/users", "/api/runs"):
        assert client.get(path).status_code == 200, path


def test_logout_ends_the_session_and_needs_csrf(client):
    token = login(client, "ann")
    assert client.post("/logout", data={}).status_code == 403
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert client.get("/annotate", follow_redirects=False).status_code == 401


def test_login_redirect_stays_on_this_site(client):
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": token,
                                           "next": "//evil.example/x"}, follow_redirects=False)
    assert response.headers["location"] == "/"


def test_admin_adds_a_user_who_can_log_in(client, app_url):
    token = login(client, "boss")
    page = client.post("/admin/users", data={"name": "newbie", "password": "", "csrf_token": token}).text
    password = page.split('id="new-password">')[1].split("<")[0]
    assert client.post("/admin/users", data={"name": "newbie", "csrf_token": token}).status_code == 409
    assert client.post("/admin/users", data={"name": "<b>x</b>", "csrf_token": token}).status_code == 422
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
