"""The error a service raises for a request it cannot honour; one handler in main.py answers it."""
from __future__ import annotations


class TaskError(Exception):
    """`status` is the HTTP status that says why; `message` says it to the person."""

    status = 422

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.headers = headers or {}
