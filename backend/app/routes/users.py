"""Accounts for admins: list them, add annotators or admins, set a new password, disable or enable one; each
change only with the acting admin's own password (a stolen session alone changes no account)."""
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
    """A new account (blank password: generated), only with the acting admin's own password: a stolen session
    is not enough to make itself a lasting account, admin or not."""
    _confirm(request, user, your_password, "add an account")
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
    and revokes its API tokens. Only with the acting admin's own password: with a stolen session alone, an
    annotator's account could be taken over."""
    account = _account(db, account_id)
    _confirm(request, user, your_password, f"set {account.name}'s password")
    keep = request.session.get(SESSION_TOKEN) if account.id == user.id else None
    try:
        password = set_password(db, account, password or None, settings, keep_session=keep)
    except AccountError as error:
        return _page(request, user, db, status_code=error.status, password_error=error.message, error_for=account)
    return _page(request, user, db, changed=account, changed_password=password)


@router.post("/admin/users/{account_id}/disable", dependencies=[Depends(check_csrf)])
def disable(account_id: int, request: Request, your_password: str = Form("", max_length=1000),
            user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Disable an account: it cannot log in, and its sessions and API tokens end now. Not one's own; only
    with the acting admin's own password."""
    account = _account(db, account_id)
    if account.id == user.id:
        raise HTTPException(409, "You cannot disable your own account.")
    _confirm(request, user, your_password, f"disable {account.name}")
    set_disabled(db, account, True)
    return _page(request, user, db, disabled=account)


@router.post("/admin/users/{account_id}/enable", dependencies=[Depends(check_csrf)])
def enable(account_id: int, request: Request, your_password: str = Form("", max_length=1000),
           user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Enable a disabled account again, only with the acting admin's own password (else a stolen session
    could bring back an account whose password was stolen with it)."""
    account = _account(db, account_id)
    _confirm(request, user, your_password, f"enable {account.name}")
    set_disabled(db, account, False)
    return _page(request, user, db, enabled=account)


def _confirm(request: Request, user: Annotator, your_password: str, doing: str) -> None:
    """403, nothing done, unless `your_password` is the acting admin's own (a wrong one counts as a failed login)."""
    if not reauthenticated(request, user, your_password):
        raise HTTPException(403, f"Enter your own password to {doing}.")


def _account(db: Session, account_id: int) -> Annotator:
    account = db.get(Annotator, account_id)
    if account is None:
        raise HTTPException(404, f"There is no account {account_id}.")
    return account
