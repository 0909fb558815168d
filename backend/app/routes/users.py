"""Accounts for admins: list them and add annotators or admins."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.accounts import AccountError, DuplicateAccount, add_account
from backend.app.deps import admin_user, check_csrf, get_db, render
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
             is_admin: bool = Form(False), user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    try:
        account, password = add_account(db, name, password or None, is_admin)
    except DuplicateAccount as error:
        raise HTTPException(409, str(error)) from None
    except AccountError as error:
        raise HTTPException(422, str(error)) from None
    return _page(request, user, db, created=account, created_password=password)
