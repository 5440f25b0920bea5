"""API errors, shaped like Kubernetes' metav1.Status so that clients and tools read them alike."""

from __future__ import annotations


class ApiError(Exception):
    """An error with an HTTP code and a Kubernetes reason (NotFound, Conflict, Invalid, ...)."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, kind: str = "", name: str = "", causes: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.causes = causes or []

    def to_status(self) -> dict:
        details: dict = {}
        if self.name:
            details["name"] = self.name
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [{"field": f, "message": m} for f, m in self.causes]
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": self.message, "reason": self.reason, "code": self.code}
        if details:
            status["details"] = details
        return status

    @staticmethod
    def from_status(status: dict) -> "ApiError":
        cls = _BY_REASON.get(status.get("reason", ""), ApiError)
        details = status.get("details") or {}
        causes = [(c.get("field", ""), c.get("message", "")) for c in details.get("causes") or []]
        err = cls(status.get("message", "unknown error"), kind=details.get("kind", ""),
                  name=details.get("name", ""), causes=causes)
        if cls is ApiError:
            err.code = status.get("code", 500)
            err.reason = status.get("reason", "InternalError")
        return err


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class Unauthorized(ApiError):
    code, reason = 401, "Unauthorized"


class NotFound(ApiError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(ApiError):
    code, reason = 405, "MethodNotAllowed"


class AlreadyExists(ApiError):
    code, reason = 409, "AlreadyExists"


class Conflict(ApiError):
    code, reason = 409, "Conflict"


class Gone(ApiError):
    """The requested resourceVersion is older than the watch history: re-list and watch again."""

    code, reason = 410, "Expired"


class RequestEntityTooLarge(ApiError):
    code, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(ApiError):
    code, reason = 422, "Invalid"


class RequestHeaderFieldsTooLarge(ApiError):
    """Request headers too long or too many (HTTP 431; Kubernetes has no StatusReason of its own for it)."""

    code, reason = 431, "RequestHeaderFieldsTooLarge"


class Timeout(ApiError):
    code, reason = 504, "Timeout"


_BY_REASON = {c.reason: c for c in (BadRequest, Unauthorized, NotFound, MethodNotAllowed, AlreadyExists,
                                    Conflict, Gone, RequestEntityTooLarge, UnsupportedMediaType, Invalid,
                                    RequestHeaderFieldsTooLarge, Timeout)}
