"""The profile page: the account's personal API tokens, made (shown once) and revoked."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from backend.app.deps import check_csrf, current_user, flash, get_db, render
from backend.app.tokens import TOKEN_NAME_MAX, account_tokens, create_token, revoke_token
from backend.db.models import Annotator

router = APIRouter(include_in_schema=False)


def _page(request: Request, user: Annotator, db: Session, **context):
    return render(request, "profile.html", user=user, tokens=account_tokens(db, user.id),
                  name_max=TOKEN_NAME_MAX, **context)


@router.get("/profile")
def profile(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    return _page(request, user, db)


@router.post("/profile/tokens", dependencies=[Depends(check_csrf)])
def new_token(request: Request, name: str = Form(max_length=TOKEN_NAME_MAX), scope: str = Form("read", max_length=20),
              user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    """The page shows the new token once; the database keeps only its hash."""
    row, token = create_token(db, user, name, scope)
    return _page(request, user, db, created=row, created_token=token)


@router.post("/profile/tokens/{token_id}/revoke", dependencies=[Depends(check_csrf)])
def revoke(token_id: int, request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    row = revoke_token(db, user.id, token_id)
    flash(request, f"Token {row.name!r} is revoked: requests with it are refused from now on.")
    return RedirectResponse("/profile", status_code=303)
