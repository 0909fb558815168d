"""Server-side login sessions: the signed cookie carries the account id and a random token, the
database the token's SHA-256 (``LoginSession``). A session is valid while its row exists and is
younger than SESSION_DAYS; logging out deletes the row, a password change all of the account's rows."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.db.models import Annotator, LoginSession

SESSION_DAYS = 14


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _oldest_valid() -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=SESSION_DAYS)


def start_session(db: Session, annotator_id: int) -> str:
    """A new session for the account, committed; returns its token (for the cookie only)."""
    db.execute(delete(LoginSession).where(LoginSession.annotator_id == annotator_id,   # the account's expired ones
                                          LoginSession.created_at < _oldest_valid()))
    token = secrets.token_urlsafe(32)
    db.add(LoginSession(annotator_id=annotator_id, token_hash=_digest(token)))
    db.commit()
    return token


def session_user(db: Session, annotator_id: object, token: object) -> Annotator | None:
    """The account whose live session the cookie's id and token name, or None."""
    if not isinstance(annotator_id, int) or not isinstance(token, str) or not token:
        return None
    return db.scalar(select(Annotator).join(LoginSession, LoginSession.annotator_id == Annotator.id)
                     .where(Annotator.id == annotator_id, LoginSession.token_hash == _digest(token),
                            LoginSession.created_at >= _oldest_valid()))


def end_session(db: Session, token: object) -> None:
    """Log the session out (committed); nothing to do for a token that names none."""
    if isinstance(token, str) and token:
        db.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))
        db.commit()


def end_sessions(db: Session, annotator_id: int, keep: object = None) -> None:
    """Delete the account's sessions, but for the one with token `keep`; the caller commits."""
    query = delete(LoginSession).where(LoginSession.annotator_id == annotator_id)
    if isinstance(keep, str) and keep:
        query = query.where(LoginSession.token_hash != _digest(keep))
    db.execute(query)
