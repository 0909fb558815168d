"""Logging in: login sessions, the throttle on failed logins, and bounded password checks.

Sessions: the signed cookie carries the account id and a random token, the database the token's
SHA-256 (``LoginSession``). A session is valid while its row exists, is younger than
`Settings.session_days` and was used within `Settings.session_idle_minutes`; logging out deletes
the row, a password change or disabling the account all of its rows.

Logins: failed logins are counted within the window (the `limits` library) per account name and client
address together, per address, and per account name. Past the first limit (the 11th for one account from
one address) or the second (an address trying many names), a login is refused with 429 before any
password is checked. Past the third (many addresses after one name) the account is locked for addresses
that have failed for that name, but the right password from an address with no failures for it gets
through (up to the address's own cap): nobody can lock an account's owner out by guessing at it, and one
person's failures do not lock out the others behind the same address (a NAT, an office proxy). Every
check costs the same argon2 work, an unknown name included (it is checked against a dummy hash), so the
answer's timing does not tell which names exist; and at most `password_checks_at_once` checks run at a
time (each takes 64 MiB), the others waiting without holding a thread.
"""
from __future__ import annotations

import hashlib
import math
import secrets
import time
from datetime import datetime, timedelta, timezone

import anyio
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from backend.app.errors import TaskError
from backend.app.reservations import one_writer_at_a_time
from backend.app.security import unmatchable_hash, verify_password
from backend.config import Settings
from backend.db.models import Annotator, LoginSession

# A session's last use is written at most this often: not one database write per request.
_TOUCH_SECONDS = 60


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def start_session(db: Session, annotator_id: int, settings: Settings) -> str:
    """A new session for the account, committed; returns its token (for the cookie only)."""
    db.execute(delete(LoginSession).where(LoginSession.annotator_id == annotator_id,   # the account's expired ones
                                          LoginSession.created_at < _now() - timedelta(days=settings.session_days)))
    token = secrets.token_urlsafe(32)
    now = _now()
    db.add(LoginSession(annotator_id=annotator_id, token_hash=_digest(token), created_at=now, last_seen_at=now))
    db.commit()
    return token


def session_user(db: Session, annotator_id: object, token: object, settings: Settings) -> Annotator | None:
    """The account whose live session the cookie's id and token name, or None; marks the session used."""
    if not isinstance(annotator_id, int) or not isinstance(token, str) or not token:
        return None
    now = _now()
    row = db.execute(select(Annotator, LoginSession.id, LoginSession.last_seen_at)
                     .join(LoginSession, LoginSession.annotator_id == Annotator.id)
                     .where(Annotator.id == annotator_id, Annotator.disabled_at.is_(None),
                            LoginSession.token_hash == _digest(token),
                            LoginSession.created_at >= now - timedelta(days=settings.session_days),
                            LoginSession.last_seen_at >= now - timedelta(minutes=settings.session_idle_minutes))
                     ).one_or_none()
    if row is None:
        return None
    user, session_id, last_seen = row
    if last_seen.replace(tzinfo=timezone.utc) < now - timedelta(seconds=_TOUCH_SECONDS):
        _touch(db, session_id, now)
    return user


@one_writer_at_a_time
def _touch(db: Session, session_id: int, now: datetime) -> None:
    # Queued with the annotation writes: in SQLite's busy handler it would wait in growing sleeps.
    try:
        db.commit()      # a fresh transaction: upgrading the read one fails if another write came since
        db.execute(update(LoginSession).where(LoginSession.id == session_id).values(last_seen_at=now))
        db.commit()
    except OperationalError:   # a read-only or busy database: reading pages goes on, the next request retries
        db.rollback()


def end_session(db: Session, token: object) -> None:
    """Log the session out (committed); nothing to do for a token that names none."""
    if isinstance(token, str) and token:
        db.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))
        db.commit()


def has_session(db: Session, annotator_id: int) -> bool:
    """Whether the account is still logged in anywhere (another browser)."""
    return db.scalar(select(LoginSession.id).where(LoginSession.annotator_id == annotator_id).limit(1)) is not None


def end_sessions(db: Session, annotator_id: int, keep: object = None) -> None:
    """Delete the account's sessions, but for the one with token `keep`; the caller commits."""
    query = delete(LoginSession).where(LoginSession.annotator_id == annotator_id)
    if isinstance(keep, str) and keep:
        query = query.where(LoginSession.token_hash != _digest(keep))
    db.execute(query)


class LoginThrottled(TaskError):
    """Too many failed logins for this name or address; `retry_after` is in whole seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"Too many failed logins: try again in {retry_after} s.", 429,
                         {"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class LoginGuard:
    """The failed-login throttle and the bounded argon2 checks of one app (see the module docstring)."""

    def __init__(self, settings: Settings):
        per = settings.login_window_seconds
        self.pair_limit = RateLimitItemPerSecond(settings.login_failures, per)
        self.address_limit = RateLimitItemPerSecond(settings.login_address_failures, per)
        self.account_limit = RateLimitItemPerSecond(settings.login_account_failures, per)
        self.failures = MovingWindowRateLimiter(storage_from_string(settings.login_failures_storage))
        self.checks = anyio.CapacityLimiter(settings.password_checks_at_once)
        # What an unknown name is checked against, with the same argon2 parameters as every stored hash: an
        # unknown name costs what a known one does. Made with no argon2 work, so none competes with the start.
        self.dummy_hash = unmatchable_hash()

    def _counts(self, name: str, address: str, reauth: bool = False):
        """(limit, key) of each count a failure adds to; a re-entered password spares the address's own."""
        name = name.strip().lower()
        counts = [(self.pair_limit, ("pair", name, address)), (self.account_limit, ("account", name))]
        return counts if reauth else [*counts, (self.address_limit, ("address", address))]

    def retry_after(self, name: str, address: str, reauth: bool = False) -> int | None:
        """Seconds until this name may be tried from this address again, or None when it may now."""
        # Clean for this name: this address has no failure for it (failures for other names, e.g. colleagues
        # behind the same NAT, do not count here; the address's own cap bounds those).
        pair_failed = self.failures.get_window_stats(self.pair_limit, "pair", name.strip().lower(), address
                                                     ).remaining < self.pair_limit.amount
        for limit, key in self._counts(name, address, reauth):
            if key[0] == "account" and not pair_failed:
                continue        # an account-only lock: the owner, from an address clean for it, still gets in
            if not self.failures.test(limit, *key):
                reset = self.failures.get_window_stats(limit, *key).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def check_in_thread(self, password_hash: str | None, name: str, address: str, password: str,
                        reauth: bool = False) -> bool:
        """`check` for a sync route (already on a worker thread), e.g. an admin re-entering their password
        (`reauth`: a failure does not count against the address alone)."""
        # Also looked at once an async check's turn has come: the failures of the checks it waited for count.
        wait = self.retry_after(name, address, reauth)
        if wait is not None:
            raise LoginThrottled(wait)
        if verify_password(password_hash or self.dummy_hash, password) and password_hash is not None:
            return True
        for limit, key in self._counts(name, address, reauth):
            self.failures.hit(limit, *key)
        return False

    async def check(self, password_hash: str | None, name: str, address: str, password: str) -> bool:
        """Whether `password` matches `password_hash` (None: the name is unknown, so it never does).

        Raises LoginThrottled without checking when this name from this address, or this address, has
        failed too often, or the name has and this address has failed for it at all."""
        wait = self.retry_after(name, address)
        if wait is not None:
            raise LoginThrottled(wait)
        return await anyio.to_thread.run_sync(self.check_in_thread, password_hash, name, address, password,
                                              limiter=self.checks)
