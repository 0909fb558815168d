"""Passwords (argon2id) and their policy, CSRF tokens, the input rules that keep hostile names out, and the
server's stored secrets."""
from __future__ import annotations

import base64
import hmac
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import ARGON2_VERSION
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db.models import ServerSecret

_HASHER = PasswordHasher()  # argon2-cffi's defaults follow RFC 9106's low-memory profile

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CATEGORY_NAME_MAX = 64
# Letters (any script), digits, spaces, hyphens, apostrophes: enough for "fire hydrant" or
# "potter's wheel", and nothing a browser would treat as markup.
_CATEGORY_NAME = re.compile(r"^[^\W_](?:[\w' -]*[^\W_])?$")
# zxcvbn's scores run 0 (a top-100 password) to 4; it judges only this many characters (its own limit).
PASSWORD_CHECK_CHARS = 72
# Words every account's password is also judged against, beside the account's own name.
SITE_WORDS = ("ambient", "annotator", "admin")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def unmatchable_hash() -> str:
    """A hash that no password matches, in the encoding and with the parameters of `hash_password`'s: a random
    salt and a random digest. Checking a password against it costs what checking against a real hash does, and
    making it costs nothing, where hashing a random password takes argon2's 0.15 s of CPU on 4 threads.
    Written by hand: argon2-cffi makes an encoded hash only by hashing."""
    def unpadded(data: bytes) -> str:
        return base64.b64encode(data).decode().rstrip("=")

    salt, digest = secrets.token_bytes(_HASHER.salt_len), secrets.token_bytes(_HASHER.hash_len)
    return (f"$argon2{_HASHER.type.name.lower()}$v={ARGON2_VERSION}$m={_HASHER.memory_cost},t={_HASHER.time_cost},"
            f"p={_HASHER.parallelism}${unpadded(salt)}${unpadded(digest)}")


def check_password_policy(password: str, min_length: int, min_score: int = 3,
                          user_inputs: tuple[str, ...] = ()) -> None:
    """ValueError saying why `password` is unfit: too short, only white space, or too easy to guess by
    zxcvbn (common passwords, words, names, keyboard patterns, repeats, and `user_inputs`, e.g. the
    account's name), with zxcvbn's advice."""
    if len(password) < min_length:
        raise ValueError(f"a password needs at least {min_length} characters")
    if not password.strip():
        raise ValueError("a password cannot be only spaces")
    from zxcvbn import zxcvbn     # its word lists take 0.03 s to load: when a password is set, not at start-up

    judged = zxcvbn(password[:PASSWORD_CHECK_CHARS], user_inputs=[*user_inputs, *SITE_WORDS])
    if judged["score"] < min_score:
        feedback = judged["feedback"]
        why = " ".join([feedback["warning"], *feedback["suggestions"]]).strip()
        raise ValueError(f"that password is too easy to guess{': ' + why if why else ''}")


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    # compare_digest: the comparison time must not reveal how much of the token was right. Compared as
    # UTF-8 bytes: on str it raises for non-ASCII input (a 500 for `csrf_token=%C3%A9`).
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


def normalise_category_name(raw: str) -> str:
    """A category name as stored: trimmed, lower case, single spaces; ValueError saying why if unfit."""
    name = " ".join(raw.split()).lower()
    if not name:
        raise ValueError("the category name is empty")
    if len(name) > CATEGORY_NAME_MAX:
        raise ValueError(f"the category name is longer than {CATEGORY_NAME_MAX} characters")
    if not _CATEGORY_NAME.match(name):
        raise ValueError("a category name may contain only letters, digits, spaces, hyphens and apostrophes")
    return name


def server_secret(db: Session, name: str) -> str:
    """The named secret (the session cookies' signing key, the gold positions' key), made once and stored so
    every worker and restart uses the same one."""
    value = db.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    if value is None:
        db.add(ServerSecret(name=name, value=secrets.token_urlsafe(48)))
        try:
            db.commit()
        except IntegrityError:  # another worker made it first: use theirs
            db.rollback()
        value = db.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    return value
