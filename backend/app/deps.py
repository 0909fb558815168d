"""Request dependencies: the database session, the logged-in annotator, CSRF checks, page rendering."""
from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData
from sqlalchemy.orm import Session

from backend.app.auth import session_user
from backend.app.security import CSRF_FIELD, CSRF_HEADER, csrf_matches, new_csrf_token
from backend.db.models import Annotator


SESSION_TOKEN = "sid"      # the cookie session's key for its login token (backend/app/auth.py)


class LoginRequired(Exception):
    """Raised for a request without a valid session; pages redirect to /login, the API answers 401."""


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def optional_user(request: Request, db: Session = Depends(get_db)) -> Annotator | None:
    annotator_id = request.session.get("uid")
    if annotator_id is None:
        return None
    user = session_user(db, annotator_id, request.session.get(SESSION_TOKEN))
    if user is None:          # logged out, expired, password changed or account removed: the cookie is worth nothing
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
    if given is None:
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


def flash(request: Request, message: str) -> None:
    """A one-line message shown on the next page."""
    request.session["flash"] = message


async def form_fields(request: Request) -> FormData:
    """The parsed form, for routes whose field names vary (they stay sync: the database is blocking)."""
    return await request.form()
