"""The profile page: the account's personal API tokens, made (shown once) and revoked."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from backend.app.deps import check_csrf, current_user, flash, get_db, get_settings, no_store, reauthenticated, render
from backend.app.tokens import TOKEN_NAME_MAX, account_tokens, create_token, is_expired, revoke_token
from backend.config import Settings
from backend.db.models import Annotator

router = APIRouter(include_in_schema=False)


def _page(request: Request, user: Annotator, db: Session, settings: Settings, status_code: int = 200, **context):
    # no-store: the page may show a new token.
    tokens = account_tokens(db, user.id)
    return no_store(render(request, "profile.html", user=user, tokens=tokens, name_max=TOKEN_NAME_MAX,
                           expired={t.id for t in tokens if is_expired(t)}, token_days=settings.token_days,
                           token_max_days=settings.token_max_days, status_code=status_code, **context))


@router.get("/profile")
def profile(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db),
            settings: Settings = Depends(get_settings)):
    return _page(request, user, db, settings)


@router.post("/profile/tokens", dependencies=[Depends(check_csrf)])
def new_token(request: Request, name: str = Form(max_length=TOKEN_NAME_MAX), scope: str = Form("read", max_length=20),
              days: int | None = Form(None, ge=1), your_password: str = Form("", max_length=1000),
              user: Annotator = Depends(current_user), db: Session = Depends(get_db),
              settings: Settings = Depends(get_settings)):
    """The page shows the new token once; the database keeps only its hash. Any token, read scope included,
    only with the account's own password: a stolen session is not enough to mint a key that outlives it (a
    read token sees what its account sees, unblinded verdicts and automatic labels for an admin's)."""
    if not reauthenticated(request, user, your_password):
        raise HTTPException(403, "A new token needs your own password: enter it in the form.")
    row, token = create_token(db, user, name, scope, days or settings.token_days, settings)
    return _page(request, user, db, settings, created=row, created_token=token)


@router.post("/profile/tokens/{token_id}/revoke", dependencies=[Depends(check_csrf)])
def revoke(token_id: int, request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    row = revoke_token(db, user.id, token_id)
    flash(request, f"Token {row.name!r} is revoked: requests with it are refused from now on.")
    return RedirectResponse("/profile", status_code=303)
