"""Request dependencies: settings, the database session, the logged-in annotator, CSRF checks, page rendering."""
from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape
from starlette.datastructures import FormData
from sqlalchemy.orm import Session

from backend.app.auth import session_user
from backend.app.security import CSRF_FIELD, CSRF_HEADER, csrf_matches, new_csrf_token
from backend.config import Settings
from backend.db.models import Annotator


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SESSION_TOKEN = "sid"      # the cookie session's key for its login token (backend/app/auth.py)


class LoginRequired(Exception):
    """Raised for a request without a valid session; pages redirect to /login, the API answers 401."""


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def optional_user(request: Request, db: Session = Depends(get_db)) -> Annotator | None:
    annotator_id = request.session.get("uid")
    if annotator_id is None:
        return None
    user = session_user(db, annotator_id, request.session.get(SESSION_TOKEN), get_settings(request))
    if user is None:          # logged out, expired, idle, password changed or account removed: the cookie is worthless
        request.session.clear()
    return user


def current_user(user: Annotator | None = Depends(optional_user)) -> Annotator:
    if user is None:
        raise LoginRequired()
    return user


def admin_user(user: Annotator = Depends(current_user)) -> Annotator:
    if not user.is_admin:
        raise HTTPException(403, "This page is for admins only.")
    return user


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use; every form carries it back."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = new_csrf_token()
    return token


async def check_csrf(request: Request) -> None:
    """Every state-changing request must echo the session's token (form field or header)."""
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(_FORM_TYPES):
        form = await request.form()
        given = form.get(CSRF_FIELD)
    if not csrf_matches(request.session.get("csrf"), given if isinstance(given, str) else None):
        raise HTTPException(403, "The form's security token is missing or stale: reload the page and try again.")


def render(request: Request, template: str, user: Annotator | None = None, status_code: int = 200,
           **context) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(
        request, template, {"user": user, "csrf_token": csrf_token(request),
                            "flash": request.session.pop("flash", None), **context},
        status_code=status_code)


def wants_html(request: Request) -> bool:
    """A browser's form post (it asks for HTML) gets a redirect; API clients get JSON."""
    return "text/html" in request.headers.get("accept", "")


def flash(request: Request, message: str) -> None:
    """A one-line message shown on the next page."""
    request.session["flash"] = message


async def form_fields(request: Request) -> FormData:
    """The parsed form, for routes whose field names vary (they stay sync: the database is blocking)."""
    return await request.form()


def figure_html(figure, **config) -> Markup:
    """A plotly figure as a placeholder that /static/charts.js draws: its data travels in an escaped
    attribute, so pages need no inline script (the Content-Security-Policy allows none)."""
    return Markup(f'<div class="plotly-figure" data-figure="{escape(figure.to_json())}" '
                  f'data-config="{escape(json.dumps({"responsive": True, **config}))}"></div>')
