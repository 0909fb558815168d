"""Passwords (argon2id), CSRF tokens, and the input rules that keep hostile names out."""
from __future__ import annotations

import hmac
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()  # argon2-cffi's defaults follow RFC 9106's low-memory profile

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CATEGORY_NAME_MAX = 64
# Letters (any script), digits, spaces, hyphens, apostrophes: enough for "fire hydrant" or
# "potter's wheel", and nothing a browser would treat as markup.
_CATEGORY_NAME = re.compile(r"^[^\W_](?:[\w' -]*[^\W_])?$")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


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
    # compare_digest: the comparison time must not reveal how much of the token was right
    return bool(expected) and bool(given) and hmac.compare_digest(expected, given)


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
