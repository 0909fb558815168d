"""Accounts for admins: list them, add annotators or admins, set a new password."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.deps import SESSION_TOKEN, admin_user, check_csrf, get_db, get_settings, render
from backend.app.users import add_account, set_password
from backend.config import Settings
from backend.db.models import Annotator

router = APIRouter(include_in_schema=False)


def _page(request: Request, user: Annotator, db: Session, **context):
    return render(request, "users.html", user=user,
                  people=db.scalars(select(Annotator).order_by(Annotator.name)).all(), **context)


@router.get("/admin/users")
def users(request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    return _page(request, user, db)


@router.post("/admin/users", dependencies=[Depends(check_csrf)])
def add_user(request: Request, name: str = Form(max_length=200), password: str = Form("", max_length=1000),
             is_admin: bool = Form(False), user: Annotator = Depends(admin_user), db: Session = Depends(get_db),
             settings: Settings = Depends(get_settings)):
    account, password = add_account(db, name, password or None, is_admin, settings)
    return _page(request, user, db, created=account, created_password=password)


@router.post("/admin/users/{account_id}/password", dependencies=[Depends(check_csrf)])
def change_password(account_id: int, request: Request, password: str = Form("", max_length=1000),
                    your_password: str = Form("", max_length=1000), user: Annotator = Depends(admin_user),
                    db: Session = Depends(get_db), settings: Settings = Depends(get_settings)):
    """A new password (blank: generated); it logs the account out everywhere but in this admin's own session.
    An admin's password changes only with the acting admin's own password: a stolen session is not enough."""
    account = db.get(Annotator, account_id)
    if account is None:
        raise HTTPException(404, f"There is no account {account_id}.")
    address = request.client.host if request.client else ""
    if account.is_admin and not request.app.state.login_guard.check_in_thread(user.password_hash, user.name, address,
                                                                               your_password):
        raise HTTPException(403, f"{account.name} is an admin: enter your own password to set theirs.")
    keep = request.session.get(SESSION_TOKEN) if account.id == user.id else None
    password = set_password(db, account, password or None, settings, keep_session=keep)
    return _page(request, user, db, changed=account, changed_password=password)
