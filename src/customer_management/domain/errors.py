"""Domain exceptions: the gRPC API answers them as rich statuses (api/errors.py), the REST
gateway as TMF error JSON (rest/problems.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    type: str
    subject: str
    description: str


@dataclass
class DomainError(Exception):
    """An answer to the caller: `code` is a gRPC status name, `reason` an ErrorInfo reason."""

    message: str
    code: str = "FAILED_PRECONDITION"
    reason: str = "FAILED_PRECONDITION"
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay: float | None = None
    """Seconds after which a retry may succeed (a RetryInfo), when the caller should wait."""

    def __str__(self) -> str:
        return self.message


@dataclass
class InvalidArgument(DomainError):
    violations: list[FieldViolation] = field(default_factory=list)
    code: str = "INVALID_ARGUMENT"
    reason: str = "INVALID_ARGUMENT"


@dataclass
class NotFound(DomainError):
    code: str = "NOT_FOUND"
    reason: str = "RESOURCE_NOT_FOUND"


@dataclass
class FailedPrecondition(DomainError):
    violations: list[PreconditionViolation] = field(default_factory=list)


@dataclass
class Aborted(DomainError):
    code: str = "ABORTED"
    reason: str = "ETAG_MISMATCH"


@dataclass
class Unavailable(DomainError):
    code: str = "UNAVAILABLE"
    reason: str = "DATABASE_UNAVAILABLE"


@dataclass
class ResourceExhausted(DomainError):
    code: str = "RESOURCE_EXHAUSTED"
    reason: str = "RESOURCE_EXHAUSTED"


@dataclass
class AlreadyExists(DomainError):
    code: str = "ALREADY_EXISTS"
    reason: str = "ALREADY_EXISTS"
