"""Accounts for admins: list them, add annotators or admins, set a new password, disable or enable one."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.deps import (SESSION_TOKEN, admin_user, check_csrf, get_db, get_settings, no_store, reauthenticated,
                              render)
from backend.app.users import AccountError, add_account, set_disabled, set_password
from backend.config import Settings
from backend.db.models import Annotator

router = APIRouter(include_in_schema=False)


def _page(request: Request, user: Annotator, db: Session, status_code: int = 200, **context):
    # no-store: the page may show a new password.
    return no_store(render(request, "users.html", user=user, status_code=status_code,
                           people=db.scalars(select(Annotator).order_by(Annotator.name)).all(), **context))


@router.get("/admin/users")
def users(request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    return _page(request, user, db)


@router.post("/admin/users", dependencies=[Depends(check_csrf)])
def add_user(request: Request, name: str = Form(max_length=200), password: str = Form("", max_length=1000),
             is_admin: bool = Form(False), your_password: str = Form("", max_length=1000),
             user: Annotator = Depends(admin_user), db: Session = Depends(get_db),
             settings: Settings = Depends(get_settings)):
    """A new account (blank password: generated). A new admin only with the acting admin's own password:
    a stolen session is not enough to make itself a lasting admin account."""
    if is_admin and not reauthenticated(request, user, your_password):
        raise HTTPException(403, "A new admin needs your own password: enter it beside the admin box.")
    try:
        account, password = add_account(db, name, password or None, is_admin, settings)
    except AccountError as error:      # said by the form, which keeps the name typed
        return _page(request, user, db, status_code=error.status, add_error=error.message, add_name=name)
    return _page(request, user, db, created=account, created_password=password)


@router.post("/admin/users/{account_id}/password", dependencies=[Depends(check_csrf)])
def change_password(account_id: int, request: Request, password: str = Form("", max_length=1000),
                    your_password: str = Form("", max_length=1000), user: Annotator = Depends(admin_user),
                    db: Session = Depends(get_db), settings: Settings = Depends(get_settings)):
    """A new password (blank: generated); it logs the account out everywhere but in this admin's own session,
    and revokes its API tokens. An admin's password changes only with the acting admin's own password: a
    stolen session is not enough."""
    account = _account(db, account_id)
    if account.is_admin and not reauthenticated(request, user, your_password):
        raise HTTPException(403, f"{account.name} is an admin: enter your own password to set theirs.")
    keep = request.session.get(SESSION_TOKEN) if account.id == user.id else None
    try:
        password = set_password(db, account, password or None, settings, keep_session=keep)
    except AccountError as error:
        return _page(request, user, db, status_code=error.status, password_error=error.message, error_for=account)
    return _page(request, user, db, changed=account, changed_password=password)


@router.post("/admin/users/{account_id}/disable", dependencies=[Depends(check_csrf)])
def disable(account_id: int, request: Request, your_password: str = Form("", max_length=1000),
            user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Disable an account: it cannot log in, and its sessions and API tokens end now. Not one's own; an
    admin's only with the acting admin's own password."""
    account = _account(db, account_id)
    if account.id == user.id:
        raise HTTPException(409, "You cannot disable your own account.")
    if account.is_admin and not reauthenticated(request, user, your_password):
        raise HTTPException(403, f"{account.name} is an admin: enter your own password to disable them.")
    set_disabled(db, account, True)
    return _page(request, user, db, disabled=account)


@router.post("/admin/users/{account_id}/enable", dependencies=[Depends(check_csrf)])
def enable(account_id: int, request: Request, your_password: str = Form("", max_length=1000),
           user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Enable a disabled account again; an admin's only with the acting admin's own password (else a stolen
    session could bring back an admin account whose password was stolen with it)."""
    account = _account(db, account_id)
    if account.is_admin and not reauthenticated(request, user, your_password):
        raise HTTPException(403, f"{account.name} is an admin: enter your own password to enable them.")
    set_disabled(db, account, False)
    return _page(request, user, db, enabled=account)


def _account(db: Session, account_id: int) -> Annotator:
    account = db.get(Annotator, account_id)
    if account is None:
        raise HTTPException(404, f"There is no account {account_id}.")
    return account
