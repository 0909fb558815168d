"""Hostile users: admin routes for annotators, posts without CSRF, path traversal, markup in names,
oversized bodies, session fixation."""
from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app_helpers import PASSWORD, add_user, csrf_of, login, unit_ids
from backend.app import create_app
from backend.app.main import SESSION_COOKIE
from backend.config import Settings
from backend.db.models import Annotation, Annotator, Category, Frame, UnitSettlement
from backend.db.session import upgrade_db, session_factory

XSS = '<script>alert("x")</script>'
MAX_REQUEST_BYTES = Settings().max_request_bytes
PUBLIC_POSTS = {"/login"}


@pytest.fixture()
def app(app_url):
    return create_app(Settings(database_url=app_url))


@pytest.fixture()
def client(app):
    with TestClient(app) as c:
        yield c


def api_routes(routes):
    """Every APIRoute, also those inside included routers (FastAPI keeps them in `original_router`)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


def state_changing_paths(app) -> list[str]:
    """Every POST/PUT/PATCH/DELETE route of the app, path parameters filled with 1."""
    return sorted({re.sub(r"\{[^}]+\}", "1", route.path) for route in api_routes(app.routes)
                   if route.methods & {"POST", "PUT", "PATCH", "DELETE"}})


def admin_paths(app) -> list[tuple[str, str]]:
    """(method, path) of every admin route: the admin pages, the results and the export API (not the
    read API /api/v1, which every account may use)."""
    return [(method, re.sub(r"\{[^}]+\}", "1", route.path)) for route in api_routes(app.routes)
            for method in sorted(route.methods)
            if route.path.startswith(("/admin", "/api", "/results")) and not route.path.startswith("/api/v1/")]


def counts(url: str) -> tuple[int, ...]:
    with session_factory(upgrade_db(url))() as db:
        return tuple(db.scalar(select(func.count()).select_from(model))
                     for model in (Annotation, Annotator, Category, UnitSettlement))


def test_annotator_gets_403_from_every_admin_route(client, app, app_url):
    token = login(client, "ann")
    before = counts(app_url)
    checked = 0
    for method, path in admin_paths(app):
        response = client.request(method, path, data={"csrf_token": token, "name": "mallory", "answer": "yes",
                                                      "category": "dog", "into": "dog", "characteristic": "true",
                                                      "is_admin": "true", "password": "longenough1"},
                                  headers={"x-csrf-token": token} if method != "GET" else {})
        assert response.status_code == 403, (method, path, response.status_code)
        checked += 1
    assert checked >= 8
    assert counts(app_url) == before          # and nothing changed


@pytest.mark.parametrize("who", ["ann", "boss"])
def test_every_post_without_or_with_a_wrong_csrf_token_is_refused(app, app_url, who):
    with TestClient(app) as client, TestClient(app) as other:
        login(client, who)
        stolen = login(other, "ann")               # a valid token, but of another session
        before = counts(app_url)
        paths = state_changing_paths(app)
        assert len(paths) >= 6
        for path in paths:
            for data in ({}, {"csrf_token": ""}, {"csrf_token": "guess"}, {"csrf_token": stolen}):
                response = client.post(path, data={**data, "answer": "no", "name": "x1", "password": "p" * 10,
                                                   "category": "dog", "into": "dog", "characteristic": "true"})
                assert response.status_code == 403, (path, data, response.status_code, response.text[:200])
        assert counts(app_url) == before


@pytest.mark.parametrize("path", [
    "/static/../backend/config.py", "/static/%2e%2e/backend/config.py", "/static/..%2fbackend%2fconfig.py",
    "/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/static/....//....//pyproject.toml", "/static//etc/passwd",
    "/static/%2fetc%2fpasswd", "/static/..\\..\\pyproject.toml", "/images/..%2f..%2fetc%2fpasswd",
    "/images/1%2f..%2f..", "/clips/..%2f..%2fetc%2fpasswd", "/clips/%2e%2e", "/images/-1", "/clips/1e9",
])
def test_path_traversal_in_file_and_media_routes(client, path):
    login(client, "ann")
    response = client.get(path)
    assert response.status_code in (400, 404, 422), (path, response.status_code)
    for secret in ("database_url", "root:x:", "[project]", "BaseSettings"):
        assert secret not in response.text


@pytest.mark.parametrize("path", ["/images/2147483648", "/clips/-2147483649", "/units/2147483648",
                                  "/images/99999999999999999999", "/api/runs/2147483648/detectors.json"])
def test_ids_past_the_databases_integers_are_404(client, path):
    # PostgreSQL's INTEGER is 32-bit and SQLite's 64-bit: no row has such an id, whichever it is.
    login(client, "boss")
    response = client.get(path, headers={"accept": "application/json"})
    assert response.status_code == 404, (path, response.status_code, response.text[:300])


@pytest.mark.parametrize("clip_path", ["../../../../../../etc/passwd", "/etc/passwd", "clips/../../ambient.db"])
def test_clip_route_stays_inside_the_dataset_even_if_the_database_points_out(client, app_url, clip_path):
    with session_factory(upgrade_db(app_url))() as db:
        db.execute(update(Frame).values(clip_path=clip_path))
        db.commit()
    login(client, "ann")
    response = client.get("/clips/1")
    assert response.status_code == 404 and "root:" not in response.text and "SQLite" not in response.text


def test_markup_in_category_names_is_refused_and_never_rendered(client, app_url):
    token = login(client, "ann")
    unit = int(client.post("/annotate", data={"csrf_token": token}, follow_redirects=False)
               .headers["location"].rsplit("/", 1)[1])
    response = client.post(f"/units/{unit}/annotation", headers={"accept": "text/html"},
                           data={"answer": "yes", "category": XSS, "csrf_token": token})
    assert response.status_code == 422 and XSS not in response.text
    # A name that reached the table some other way (an old import) is escaped on every page.
    with session_factory(upgrade_db(app_url))() as db:
        db.add(Category(name=XSS, synonyms="", stuff=False, characteristic_sound=False))
        db.commit()
    with TestClient(client.app) as admin:
        login(admin, "boss")
        for path in ("/admin/categories", "/admin/review", "/results"):
            page = admin.get(path)
            assert page.status_code == 200 and XSS not in page.text, path
        assert "&lt;script&gt;" in admin.get("/admin/categories").text


def test_markup_in_user_names_is_refused_and_never_rendered(client, app_url):
    token = login(client, "boss")
    for name in (XSS, '"><img src=x onerror=alert(1)>', "a b", "ann\nboss"):
        response = client.post("/admin/users", data={"name": name, "csrf_token": token, "your_password": PASSWORD},
                               headers={"accept": "text/html"})
        assert response.status_code == 422
        assert "<script>alert" not in response.text and "<img src=x" not in response.text
    # Failed logins echo the typed name back into the form: escaped.
    with TestClient(client.app) as anonymous:
        page = anonymous.post("/login", data={"name": XSS, "password": "whatever1",
                                              "csrf_token": csrf_of(anonymous.get("/login").text)})
        assert page.status_code == 401 and XSS not in page.text and "&lt;script&gt;" in page.text
    add_user(app_url, "plain")
    with session_factory(upgrade_db(app_url))() as db:   # a name from before the rules, straight into the table
        db.execute(update(Annotator).where(Annotator.name == "plain").values(name=XSS))
        db.commit()
    page = client.get("/admin/users")
    assert page.status_code == 200 and XSS not in page.text and "&lt;script&gt;" in page.text


@pytest.mark.parametrize("size", [MAX_REQUEST_BYTES + 1, 20 * MAX_REQUEST_BYTES])
def test_oversized_bodies_are_refused_before_reading(client, app_url, size):
    token = login(client, "ann")
    unit = unit_ids(app_url)[0]
    response = client.post(f"/units/{unit}/annotation", data={"answer": "no", "category": "x" * size,
                                                               "csrf_token": token})
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    files = {"upload": ("big.mp4", b"\0" * size, "video/mp4")}
    assert client.post("/admin/users", files=files, data={"csrf_token": token}).status_code == 413


def test_oversized_chunked_body_is_cut_off(client):
    token = login(client, "ann")

    def chunks():
        yield f"csrf_token={token}&answer=no&category=".encode()
        for _ in range(MAX_REQUEST_BYTES // 65536 + 2):
            yield b"x" * 65536
    response = client.post("/annotations/undo", content=chunks(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


def test_many_form_fields_are_refused_not_a_server_error(client, app_url):
    token = login(client, "ann")
    unit = unit_ids(app_url)[0]
    body = f"csrf_token={token}&answer=no&" + "&".join(f"marked={i}" for i in range(5000))
    response = client.post(f"/units/{unit}/annotation", content=body,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code in (400, 413, 422)


def test_login_replaces_the_session_so_a_planted_one_is_worthless(app):
    with TestClient(app) as attacker, TestClient(app) as victim:
        planted_token = csrf_of(attacker.get("/login").text)
        planted = attacker.cookies.get(SESSION_COOKIE)

        def as_victim(method, path, cookie, **kwargs):
            victim.cookies.clear()                  # only the cookie we give: the one the attacker planted
            return victim.request(method, path, headers={"cookie": f"{SESSION_COOKIE}={cookie}"},
                                  follow_redirects=False, **kwargs)

        response = as_victim("POST", "/login", planted, data={"name": "boss", "password": PASSWORD,
                                                              "csrf_token": planted_token})
        assert response.status_code == 303
        after = response.cookies.get(SESSION_COOKIE)
        assert after and after != planted
        assert as_victim("GET", "/api/runs", after).status_code == 200     # the victim is logged in ...
        assert as_victim("GET", "/api/runs", planted).status_code == 401   # ... the planted session is not
        # The CSRF token rotated too: the one the attacker saw no longer works in the victim's session.
        assert as_victim("POST", "/logout", after, data={"csrf_token": planted_token}).status_code == 403


# --- issue 16: headers, no inline scripts, asset URLs, malformed bodies, paths in 404s

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)


def test_every_page_sends_the_security_headers_and_has_no_inline_script(client, app_url):
    login(client, "boss")
    for path in ("/login", "/results", "/results/1", "/admin/review", "/admin/categories", "/admin/users",
                 "/admin/jobs", "/docs", "/annotate", "/sound", "/no-such-page", "/static/style.css"):
        response = client.get(path, headers={"accept": "text/html"})
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline'" not in \
            headers["content-security-policy"].split("script-src")[1].split(";")[0], path
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "same-origin", path
        if "text/html" in headers["content-type"]:
            assert not INLINE_SCRIPT.search(response.text), (path, INLINE_SCRIPT.search(response.text))


def test_asset_urls_do_not_come_from_the_host_header(client):
    for path in ("/login", "/no-such-page"):
        page = client.get(path, headers={"host": "evil.example", "accept": "text/html"})
        assert "evil.example" not in page.text and 'href="/static/style.css"' in page.text


def test_json_nested_a_thousand_deep_is_a_422(client):
    token = login(client, "boss")
    for body in ("[" * 1000 + "]" * 1000, '{"a":' * 1000 + "1" + "}" * 1000):
        response = client.post("/api/jobs", content=body,
                               headers={"x-csrf-token": token, "content-type": "application/json"})
        assert response.status_code == 422 and "nested too deeply" in response.json()["detail"]


def test_a_form_body_on_a_json_route_is_a_422_and_the_connection_lives_on(app_url):
    import httpx

    from app_helpers import running_server
    with running_server(app_url) as base, httpx.Client(base_url=base) as http:
        http.post("/login", data={"name": "boss", "password": PASSWORD, "csrf_token": csrf_of(http.get("/login").text)})
        token = csrf_of(http.get("/login").text)
        for headers in ({}, {"x-csrf-token": token}):
            response = http.post("/api/jobs", data={"kind": "demo", "csrf_token": token}, headers=headers)
            assert response.status_code == 422 and "JSON object" in response.json()["detail"]
            assert http.get("/api/runs").status_code == 200          # the same keep-alive connection


def test_a_missing_clip_does_not_say_where_the_server_keeps_its_files(client, app_url, tmp_path):
    with session_factory(upgrade_db(app_url))() as db:
        db.execute(update(Frame).values(clip_path="clips/gone.wav"))
        db.commit()
    login(client, "ann")
    response = client.get("/clips/1")
    assert response.status_code == 404 and str(tmp_path) not in response.text and "/data" not in response.text


# --- Issue 25, item 4: a non-ASCII CSRF token is a 403 like any other wrong one, never a 500.

@pytest.mark.parametrize("logged_in", [False, True])
def test_a_non_ascii_csrf_token_is_refused_not_a_server_error(app, logged_in):
    with TestClient(app, raise_server_exceptions=False) as client:
        if logged_in:
            login(client, "ann")
        else:
            client.get("/login")                  # a session with a CSRF token to compare against
        for path in ("/login", "/annotate", "/logout"):
            form = client.post(path, content="csrf_token=%C3%A9&name=ann&password=x",
                               headers={"content-type": "application/x-www-form-urlencoded"})
            header = client.post(path, data={"name": "ann", "password": "x"}, headers={"x-csrf-token": "é".encode()})
            assert (form.status_code, header.status_code) == (403, 403), path


# --- Issue 25, item 8: names that differ only by case; job numbers without an upper bound.

def test_account_names_differ_by_more_than_case(client, app_url):
    token = login(client, "boss")
    for name in ("BOSS", "Ann", "boss"):
        response = client.post("/admin/users", data={"name": name, "csrf_token": token, "your_password": PASSWORD},
                               headers={"accept": "text/html"})
        assert response.status_code == 409 and "already an account called" in response.text, name
    with session_factory(upgrade_db(app_url))() as db:     # and the database itself refuses one
        db.add(Annotator(name="bOSS", password_hash="x"))
        with pytest.raises(IntegrityError):
            db.commit()
    assert client.post("/admin/users", data={"name": "bossy", "csrf_token": token,
                                             "your_password": PASSWORD}).status_code == 200


@pytest.mark.parametrize("field, value", [("videos", 10**9), ("epochs", 10**6), ("k", 10**7), ("gpus", 4096),
                                          ("seed", 2**64), ("k", 10**40)])
def test_job_numbers_have_an_upper_bound(app_url, tmp_path, field, value):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "manifest.jsonl").write_text("")
    app = create_app(Settings(database_url=app_url, data_roots=str(tmp_path)))
    fields = {"kind": "train", "data_dir": str(tmp_path / "dataset")} if field == "gpus" else {"kind": "demo"}
    with TestClient(app, raise_server_exceptions=False) as client:
        token = login(client, "boss")
        response = client.post("/api/jobs", json={**fields, field: value}, headers={"x-csrf-token": token})
        assert response.status_code == 422 and f"{field}: must be at most" in response.json()["detail"]
        page = client.post("/admin/jobs", data={**fields, field: str(value), "csrf_token": token},
                           headers={"accept": "text/html"})
        assert page.status_code == 422 and "must be at most" in page.text
