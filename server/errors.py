"""The server's error type and its translation to HTTP.

Every layer below the HTTP boundary raises ``ServiceError`` with a stable ``ErrorCode``
(from ``gobi.protocol``) and optional machine-readable details; the blueprints' error
handler turns it into ``{"error": {"code", "message", "details"}}`` with the status from
``STATUS``. Handlers never build error responses by hand.
"""

from __future__ import annotations

from typing import Any

from gobi.protocol import ErrorCode

STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_NAME: 400,
    ErrorCode.HASH_MISMATCH: 400,
    ErrorCode.MISSING_CHUNKS: 400,
    ErrorCode.INVALID_MOVE: 400,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.REGISTRATION_CLOSED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.NAME_EXISTS: 409,
    ErrorCode.USERNAME_TAKEN: 409,
    ErrorCode.NOT_A_DIRECTORY: 409,
    ErrorCode.IS_A_DIRECTORY: 409,
    ErrorCode.NOT_A_FILE: 409,
    ErrorCode.DIRECTORY_NOT_EMPTY: 409,
    ErrorCode.DELETE_HELD: 409,
    ErrorCode.CURSOR_EXPIRED: 410,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RANGE_NOT_SATISFIABLE: 416,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}


class ServiceError(Exception):
    """A refusal with a stable code; ``details`` must be JSON-serialisable."""

    def __init__(self, code: ErrorCode, message: str, **details: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code.value, "message": self.message, "details": self.details}}


def not_found(what: str = "not found") -> ServiceError:
    return ServiceError(ErrorCode.NOT_FOUND, what)
