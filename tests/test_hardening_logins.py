"""Logins under attack (issue 16, items 2-4, 10, 13): throttling, timing, memory, password policy,
re-entering one's password to change an admin's, idle sessions, the Secure cookie."""
from __future__ import annotations

import statistics
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app_helpers import PASSWORD, add_user, csrf_of, login, running_server
from backend.app import create_app
from backend.app.main import SESSION_COOKIE
from backend.app.security import check_password_policy, hash_password
from backend.config import Settings
from backend.db.models import LoginSession
from backend.db.session import session_factory, upgrade_db


def try_login(client: TestClient, name: str, password: str):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token},
                       follow_redirects=False)


def client_for(url: str, **settings) -> TestClient:
    return TestClient(create_app(Settings(database_url=url, **settings)))


def test_the_11th_failed_login_for_one_account_gets_429_with_retry_after(app_url):
    with client_for(app_url) as client:
        for _ in range(10):
            assert try_login(client, "ann", "wrong password").status_code == 401
        refused = try_login(client, "ann", PASSWORD)            # even the right password, until the window ends
        assert refused.status_code == 429 and "Too many failed logins" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert try_login(client, "ANN ", "wrong password").status_code == 429   # the same name, however typed


def test_the_11th_failed_login_from_one_address_gets_429(app_url):
    with client_for(app_url) as client:
        for i in range(10):                                      # ten names, one address
            assert try_login(client, f"nobody{i}", "wrong password").status_code == 401
        refused = try_login(client, "boss", PASSWORD)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


def test_the_right_password_works_again_after_the_window(app_url):
    with client_for(app_url, login_window_seconds=2) as client:
        for _ in range(10):
            try_login(client, "ann", "wrong password")
        refused = try_login(client, "ann", PASSWORD)
        assert refused.status_code == 429
        time.sleep(int(refused.headers["retry-after"]) + 0.2)
        assert try_login(client, "ann", PASSWORD).status_code == 303


def test_successful_logins_are_not_throttled(app_url):
    with client_for(app_url) as client:
        for _ in range(15):
            assert try_login(client, "ann", PASSWORD).status_code == 303


def test_unknown_and_known_names_take_the_same_time(app_url):
    # A real (default-cost) hash, as `ambient user add` makes: the dummy hash must cost the same.
    add_user(app_url, "real", password_hash=hash_password("the real password"))
    with client_for(app_url, login_failures=1000) as client:
        times = {"real": [], "no-such-user": []}
        try_login(client, "real", "warm up")
        for _ in range(30):
            for name in times:
                start = time.perf_counter()
                assert try_login(client, name, "wrong password").status_code == 401
                times[name].append(time.perf_counter() - start)
    known, unknown = statistics.median(times["real"]), statistics.median(times["no-such-user"])
    assert abs(known - unknown) < 0.2 * known, (known, unknown)


def _rss_kib(pid: int, field: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


@pytest.mark.slow
def test_50_concurrent_wrong_logins_add_under_300_mib(app_url):
    add_user(app_url, "real", password_hash=hash_password("the real password"))
    processes = []
    with running_server(app_url, env={"AMBIENT_LOGIN_FAILURES": "1000"}, process_out=processes) as base:
        pid = processes[0].pid
        with httpx.Client(base_url=base) as warm:
            warm.post("/login", data={"name": "real", "password": "x", "csrf_token": csrf_of(warm.get("/login").text)})
        before = _rss_kib(pid, "VmRSS:")
        statuses = []

        def wrong_login(i: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as client:
                token = csrf_of(client.get("/login").text)
                statuses.append(client.post("/login", data={"name": "real" if i % 2 else f"ghost{i}",
                                                            "password": "wrong", "csrf_token": token}).status_code)

        threads = [threading.Thread(target=wrong_login, args=(i,)) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = _rss_kib(pid, "VmHWM:")
    assert statuses == [401] * 50
    assert (peak - before) / 1024 < 300, f"{before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB at the peak"


@pytest.mark.parametrize("password", ["12345678", "password", " " * 8, "PASSWORD", "qwertyuiop", "zzzzzzzzzz", "short"])
def test_weak_passwords_are_refused(password):
    with pytest.raises(ValueError):
        check_password_policy(password, 8)
    check_password_policy("correct horse battery", 8)


def test_the_users_page_refuses_a_common_password(app_url):
    with client_for(app_url) as client:
        token = login(client, "boss")
        for password in ("12345678", "password", " " * 8):
            response = client.post("/admin/users", data={"name": "newbie", "password": password, "csrf_token": token})
            assert response.status_code == 422, password


def test_an_admins_password_changes_only_with_the_acting_admins_own(app_url):
    add_user(app_url, "boss2", is_admin=True)
    with client_for(app_url) as client:
        token = login(client, "boss")
        page = client.get("/admin/users").text
        boss2 = int(page.split("boss2")[1].split('action="/admin/users/')[1].split("/")[0])
        for given in ({}, {"your_password": "not my password"}):
            response = client.post(f"/admin/users/{boss2}/password",
                                   data={"password": "a fresh secret", "csrf_token": token, **given})
            assert response.status_code == 403 and "your own password" in response.json()["detail"]
        assert try_login(TestClient(client.app), "boss2", PASSWORD).status_code == 303   # unchanged
        response = client.post(f"/admin/users/{boss2}/password",
                               data={"password": "a fresh secret", "your_password": PASSWORD, "csrf_token": token})
        assert response.status_code == 200
        assert try_login(TestClient(client.app), "boss2", "a fresh secret").status_code == 303


def test_an_idle_session_ends(app_url):
    with client_for(app_url, session_idle_minutes=30) as client:
        login(client, "boss")
        assert client.get("/api/runs").status_code == 200
        with session_factory(upgrade_db(app_url))() as db:
            db.execute(update(LoginSession).values(last_seen_at=datetime.now(timezone.utc) - timedelta(minutes=29)))
            db.commit()
        assert client.get("/api/runs").status_code == 200        # used within the idle time: still valid ...
        with session_factory(upgrade_db(app_url))() as db:
            db.execute(update(LoginSession).values(last_seen_at=datetime.now(timezone.utc) - timedelta(minutes=31)))
            db.commit()
        assert client.get("/api/runs").status_code == 401        # ... not after it


@pytest.mark.parametrize("base_url, always, secure", [("http://testserver", False, False),
                                                      ("https://testserver", False, True),
                                                      ("http://testserver", True, True)])
def test_the_session_cookie_is_secure_on_https(app_url, base_url, always, secure):
    app = create_app(Settings(database_url=app_url, secure_cookie=always))
    with TestClient(app, base_url=base_url) as client:
        set_cookie = client.get("/login").headers["set-cookie"]
    assert set_cookie.startswith(SESSION_COOKIE) and ("secure" in set_cookie.lower()) == secure
