"""Passwords (argon2id) and their policy, CSRF tokens, and the input rules that keep hostile names out."""
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
# The most common passwords of public breach lists that pass a length check: refused whatever the length.
COMMON_PASSWORDS = frozenset("""
12345678 123456789 1234567890 0123456789 87654321 11111111 00000000 12341234 11223344 88888888
password password1 password12 password123 passw0rd p@ssword p@ssw0rd qwertyui qwerty123 qwertyuiop
1q2w3e4r 1qaz2wsx zaq12wsx asdfghjk asdfasdf iloveyou abc12345 abcd1234 aa123456 a1234567
sunshine princess football baseball superman starwars whatever welcome1 welcome123 letmein1 trustno1
changeme administrator admin123 admin1234 annotator ambient123 1234qwer q1w2e3r4 123qweasd
""".split())


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def check_password_policy(password: str, min_length: int) -> None:
    """ValueError saying why `password` is unfit: too short, only white space, or a common one."""
    if len(password) < min_length:
        raise ValueError(f"a password needs at least {min_length} characters")
    if not password.strip():
        raise ValueError("a password cannot be only spaces")
    if password.strip().lower() in COMMON_PASSWORDS or len(set(password)) == 1:
        raise ValueError("that password is one of the most common ones: choose another")


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
