"""Failures as TMF error JSON: the same errors the gRPC API answers, with HTTP statuses."""

from __future__ import annotations

from typing import Any

from customer_management.domain.errors import DomainError, InvalidArgument
from customer_management.domain.failures import as_domain_error

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "FAILED_PRECONDITION": 422,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
"""By gRPC status code; a few reasons say more (below)."""
STATUS_OF_REASON = {
    "ETAG_MISMATCH": 412,  # If-Match named an older version
    "RESOURCE_IN_USE": 409,  # a delete that references still prevent
    "UNSUPPORTED_MEDIA_TYPE": 415,
}


def problem(error: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and TMF error body of a failure."""
    domain = as_domain_error(error)
    status = STATUS_OF_REASON.get(domain.reason) or HTTP_STATUS.get(domain.code, 500)
    document = tmf_error(status, domain.reason, domain.message, _details(domain))
    if isinstance(domain, InvalidArgument) and domain.violations:
        document["fieldViolations"] = [
            {"field": v.field, "description": v.description} for v in domain.violations
        ]
    return status, document


def tmf_error(status: int, code: str, reason: str, message: str) -> dict[str, Any]:
    """TMF's error JSON; for failures HTTP itself answers too (no such path, method)."""
    return {"code": code, "reason": reason, "message": message, "status": str(status)}


def _details(error: DomainError) -> str:
    violations = getattr(error, "violations", None)
    if isinstance(error, InvalidArgument) and violations:
        return "; ".join(f"{v.field} {v.description}" for v in violations)
    if violations:
        return "; ".join(f"{v.subject}: {v.description}" for v in violations)
    return error.message
