"""Log in and out; the start page sends each person to their work."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from backend.app.auth import LoginThrottled, end_session, has_session, start_session
from backend.app.reservations import release_holds
from backend.app.deps import (SESSION_TOKEN, check_csrf, client_address, get_db, get_settings, optional_user,
                              render)
from backend.app.security import new_csrf_token
from backend.db.models import Annotator

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str | None:
    # Only paths on this site: "//evil.example" or "https://..." would make the login an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@router.get("/")
def home(user: Annotator | None = Depends(optional_user)) -> RedirectResponse:
    if user is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/results" if user.is_admin else "/annotate", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None):
    return render(request, "login.html", next=_safe_next(next) or "")


# Async: a login waiting for its turn at the password check must not hold one of the worker threads.
@router.post("/login", dependencies=[Depends(check_csrf)])
async def login(request: Request, name: str = Form(max_length=200), password: str = Form(max_length=1000),
                next: str = Form("", max_length=2000), db: Session = Depends(get_db)):
    def refused(status: int, error: str, headers: dict[str, str] | None = None):
        response = render(request, "login.html", status_code=status, error=error, name=name,
                          next=_safe_next(next) or "")
        response.headers.update(headers or {})
        return response

    user = await run_in_threadpool(db.scalar, select(Annotator).where(Annotator.name == name.strip()))
    try:
        matches = await request.app.state.login_guard.check(user.password_hash if user else None, name,
                                                            client_address(request), password)
    except LoginThrottled as throttled:
        return refused(throttled.status, throttled.message, throttled.headers)
    if not matches:
        return refused(401, "Wrong name or password.")
    if user.disabled_at is not None:
        return refused(403, "This account is disabled: ask an admin to enable it.")
    token = await run_in_threadpool(start_session, db, user.id, get_settings(request))
    request.session.clear()      # a fresh session (and CSRF token) on every login
    request.session.update({"uid": user.id, SESSION_TOKEN: token, "csrf": new_csrf_token()})
    return RedirectResponse(_safe_next(next) or "/", status_code=303)


@router.post("/logout", dependencies=[Depends(check_csrf)])
def logout(request: Request, user: Annotator | None = Depends(optional_user),
           db: Session = Depends(get_db)) -> RedirectResponse:
    end_session(db, request.session.get(SESSION_TOKEN))   # copies of the cookie end with it
    if user is not None and not has_session(db, user.id):
        release_holds(db, user.id)     # nobody is at work on them now: the units go back to their queues
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
