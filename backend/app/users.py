"""Creating, disabling and enabling accounts and setting their passwords: shared by the users page and
`ambient user`."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from backend.app.auth import end_sessions
from backend.app.errors import TaskError
from backend.app.security import check_password_policy, generate_password, hash_password
from backend.config import Settings
from backend.db.models import Annotator, ApiToken

# Account names appear in pages and exports: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AccountError(TaskError):
    """An account name or password that the rules refuse."""


class DuplicateAccount(AccountError):
    status = 409


def _check_password(password: str | None, name: str, settings: Settings) -> None:
    if password is not None:
        try:
            check_password_policy(password, settings.min_password_length, settings.min_password_score, (name,))
        except ValueError as error:
            raise AccountError(str(error)) from None


def add_account(db: Session, name: str, password: str | None, is_admin: bool,
                settings: Settings) -> tuple[Annotator, str]:
    """A new account, committed; returns it and its password (generated when `password` is None)."""
    name = name.strip()
    if not _NAME.match(name):
        raise AccountError("an account name is 1-64 letters, digits, dots, hyphens or underscores, "
                           "starting with a letter or digit")
    _check_password(password, name, settings)
    # Names differ by more than case: "BOSS" beside "boss" would pass for the admin in pages and exports.
    same = db.scalar(select(Annotator.name).where(func.lower(Annotator.name) == name.lower()))
    if same is not None:
        raise DuplicateAccount(f"there is already an account called {same!r}")
    password = password if password is not None else generate_password()
    account = Annotator(name=name, password_hash=hash_password(password), is_admin=is_admin)
    db.add(account)
    db.commit()
    return account, password


def set_password(db: Session, account: Annotator, password: str | None, settings: Settings,
                 keep_session: str | None = None) -> str:
    """A new password for `account` (generated when None), committed with the end of the account's
    login sessions, all but the one whose token is `keep_session` (an admin changing their own), and of
    all its API tokens (a stolen one must not outlive the password); returns the password."""
    _check_password(password, account.name, settings)
    password = password if password is not None else generate_password()
    account.password_hash = hash_password(password)
    _end_access(db, account, keep_session)
    db.commit()
    return password


def set_disabled(db: Session, account: Annotator, disabled: bool) -> None:
    """Disable the account (committed): it can no longer log in, and its sessions and API tokens end
    now; or enable it again (it logs in anew, and makes new tokens)."""
    account.disabled_at = datetime.now(timezone.utc) if disabled else None
    if disabled:
        _end_access(db, account)
    db.commit()


def _end_access(db: Session, account: Annotator, keep_session: str | None = None) -> None:
    # A stolen session or token must not outlive the password, or the account.
    end_sessions(db, account.id, keep=keep_session)
    db.execute(delete(ApiToken).where(ApiToken.annotator_id == account.id))
