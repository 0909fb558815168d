"""Personal API tokens: made on the profile page or with `ambient user token`, shown once, stored as
their SHA-256, revocable, refused once expired (`Settings.token_days`, at most `token_max_days`) and
revoked with a new password for their account. A request sends one as ``Authorization: Bearer TOKEN``;
it then carries no cookie, so it needs no CSRF token (another site cannot make a browser send this header)."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from backend.app.errors import TaskError
from backend.app.reservations import one_writer_at_a_time
from backend.config import Settings
from backend.db.models import TOKEN_SCOPES, Annotator, ApiToken

TOKEN_PREFIX = "amb_"          # says what a leaked string is (secret scanners look for prefixes)
TOKEN_NAME_MAX = 100
_TOUCH_SECONDS = 60            # a token's last use is written at most this often


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def create_token(db: Session, account: Annotator, name: str, scope: str, days: int, settings: Settings
                 ) -> tuple[ApiToken, str]:
    """A new token for `account` that expires in `days`, committed; returns its row and the token itself
    (shown once, never stored).

    Only admins get "admin" scope: an annotator's token cannot call admin endpoints."""
    name = " ".join(name.split())
    if not name or len(name) > TOKEN_NAME_MAX:
        raise TaskError(f"A token's name is 1-{TOKEN_NAME_MAX} characters (what it is for, e.g. 'laptop notebook').")
    if scope not in TOKEN_SCOPES:
        raise TaskError(f"A token's scope is one of {', '.join(TOKEN_SCOPES)}, not {scope[:20]!r}.")
    if scope == "admin" and not account.is_admin:
        raise TaskError(f"{account.name} is not an admin: their tokens have read scope only.", 403)
    if not 1 <= days <= settings.token_max_days:
        raise TaskError(f"days: a token lasts 1-{settings.token_max_days} days, not {days}.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = _now()
    row = ApiToken(annotator_id=account.id, name=name, token_hash=_digest(token), scope=scope, created_at=now,
                   expires_at=now + timedelta(days=days))
    db.add(row)
    db.commit()
    return row, token


def account_tokens(db: Session, annotator_id: int) -> list[ApiToken]:
    return list(db.scalars(select(ApiToken).where(ApiToken.annotator_id == annotator_id).order_by(ApiToken.id)))


def revoke_token(db: Session, annotator_id: int, token_id: int) -> ApiToken:
    """Delete one of the account's tokens (committed); returns it. Another account's token is not found."""
    row = db.scalar(select(ApiToken).where(ApiToken.id == token_id, ApiToken.annotator_id == annotator_id))
    if row is None:
        raise TaskError(f"You have no token {token_id}.", 404)
    db.execute(delete(ApiToken).where(ApiToken.id == token_id))
    db.commit()
    return row


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header; None when the header is absent or another kind."""
    if not authorization:
        return None
    kind, _, token = authorization.partition(" ")
    return token.strip() if kind.lower() == "bearer" else None


def token_user(db: Session, token: str) -> tuple[Annotator, ApiToken]:
    """The account and token row that `token` names, marking the token used; TaskError (401) for a token
    that is unknown, revoked or expired, saying which."""
    row = db.execute(select(Annotator, ApiToken).join(ApiToken, ApiToken.annotator_id == Annotator.id)
                     .where(ApiToken.token_hash == _digest(token), Annotator.disabled_at.is_(None))).one_or_none() \
        if token.startswith(TOKEN_PREFIX) else None
    if row is None:
        raise TaskError("The API token is unknown or revoked.", 401, {"WWW-Authenticate": "Bearer"})
    user, api_token = row
    now = _now()
    if is_expired(api_token, now):
        raise TaskError(f"The API token expired on {_aware(api_token.expires_at):%Y-%m-%d %H:%M} UTC: make a new "
                        "one on your profile page.", 401, {"WWW-Authenticate": "Bearer"})
    last = api_token.last_used_at
    if last is None or _aware(last) < now - timedelta(seconds=_TOUCH_SECONDS):
        _touch(db, api_token.id, now)
    return user, api_token


def is_expired(api_token: ApiToken, now: datetime | None = None) -> bool:
    return _aware(api_token.expires_at) <= (now or _now())


def _aware(moment: datetime) -> datetime:
    # SQLite hands DateTime(timezone=True) back without its zone; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@one_writer_at_a_time
def _touch(db: Session, token_id: int, now: datetime) -> None:
    # Queued with the other writes, as login sessions' last use is (backend/app/auth.py).
    try:
        db.commit()
        db.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
        db.commit()
    except OperationalError:   # a read-only or busy database: reading goes on, the next request retries
        db.rollback()
