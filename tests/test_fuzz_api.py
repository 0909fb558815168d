"""Property-based fuzzing: schemathesis drives every operation of the OpenAPI spec as an annotator and
as an admin, and hypothesis throws arbitrary form fields at every HTML form route; never a 5xx,
never a traceback. AMBIENT_FUZZ_EXAMPLES raises the number of cases (default 25 per operation)."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from sqlalchemy import update

from app_helpers import PASSWORD_HASH, add_user, login, seed_run
from backend.app import create_app
from backend.app.main import SESSION_COOKIE
from backend.config import Settings
from backend.db.models import Annotator
from backend.db.session import upgrade_db, session_factory

EXAMPLES = int(os.environ.get("AMBIENT_FUZZ_EXAMPLES", "25"))
LEAKS = ("Traceback", 'File "/', "sqlalchemy.", "sqlite3.")

# Built at import: schemathesis needs the app to read the schema when it collects the tests.
_TMP = tempfile.TemporaryDirectory(prefix="ambient-fuzz-")   # removed when the test process exits
_URL = seed_run(Path(_TMP.name), n_units=3, n_images=4)
add_user(_URL, "ann")
add_user(_URL, "boss", is_admin=True)
# Random logins fail: no throttle here, or restoring the shared sessions would meet a 429.
APP = create_app(Settings(database_url=_URL, login_failures=10**6, login_address_failures=10**6,
                          login_account_failures=10**6))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def session_cookie(name: str) -> tuple[str, str]:
    with TestClient(APP) as client:
        token = login(client, name)
        return client.cookies.get(SESSION_COOKIE), token


SESSIONS = {name: session_cookie(name) for name in ("ann", "boss")}


def restore_sessions() -> None:
    """Back to the shared sessions after a case that may have ended them (a logout, a password change,
    disabling the account)."""
    with session_factory(upgrade_db(_URL))() as db:
        db.execute(update(Annotator).where(Annotator.name.in_(SESSIONS)).values(password_hash=PASSWORD_HASH,
                                                                                disabled_at=None))
        db.commit()
    SESSIONS.update({name: session_cookie(name) for name in SESSIONS})


def assert_no_leak(response) -> None:
    for leak in LEAKS:        # bytes: the body may be a JPEG or a clip
        assert leak.encode() not in response.content, leak


@pytest.mark.parametrize("who", ["ann", "boss"])
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_operations_never_fail_on_the_server(case, who):
    cookie, token = SESSIONS[who]
    response = case.call(headers={"cookie": f"{SESSION_COOKIE}={cookie}", "x-csrf-token": token})
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:300])
    assert_no_leak(response)
    if who == "ann" and case.path.startswith("/api/runs"):     # the admins' export API gives an annotator nothing
        assert response.status_code >= 400, (case.formatted_path, response.status_code)


FORM_ROUTES = ["/annotate", "/sound", "/units/{id}/annotation", "/annotations/undo", "/sound/{id}", "/sound/undo",
               "/admin/units/{id}/settle", "/admin/categories/{id}/characteristic", "/admin/categories/{id}/merge",
               "/admin/users", "/admin/users/{id}/password", "/admin/users/{id}/disable", "/admin/users/{id}/enable",
               "/profile/tokens", "/login", "/logout"]
SESSION_ENDING = {"/admin/users/{id}/password", "/admin/users/{id}/disable", "/logout"}
FIELDS = ["answer", "category", "marked", "name", "password", "your_password", "is_admin", "characteristic", "into",
          "next", "audible_1", "audible_x", "scope", "days"]
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
forms = st.lists(st.tuples(st.sampled_from(FIELDS) | text, text), max_size=8)


@pytest.mark.parametrize("who", ["ann", "boss"])
@given(route=st.sampled_from(FORM_ROUTES), ident=st.integers(-2, 2**63) | st.just(1), form=forms,
       accept=st.sampled_from(["text/html", "application/json"]))
@settings(max_examples=EXAMPLES * 4, deadline=None, suppress_health_check=list(HealthCheck))
def test_html_forms_never_fail_on_the_server(who, route, ident, form, accept):
    cookie, token = SESSIONS[who]
    with TestClient(APP, cookies={SESSION_COOKIE: cookie}) as client:
        response = client.post(route.replace("{id}", str(ident)), content=urlencode([*form, ("csrf_token", token)]),
                               headers={"accept": accept, "content-type": "application/x-www-form-urlencoded"},
                               follow_redirects=False)
    if route in SESSION_ENDING:
        restore_sessions()
    assert response.status_code < 500, (route, form, response.status_code, response.text[:300])
    assert_no_leak(response)
    if re.search(r"<script>", "".join(v for _, v in form)):
        assert "<script>" not in response.text
