"""The one place where failures become rich gRPC statuses (google.rpc.Status).

Domain exceptions carry their code, reason and violations; request bytes that do not
parse become INVALID_ARGUMENT instead of grpcio's UNKNOWN; anything unexpected is
logged and answered INTERNAL without its details. api/handlers.py calls these for
every method.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from customer_management.domain.errors import DomainError, FailedPrecondition, InvalidArgument
from customer_management.domain.failures import as_domain_error

DOMAIN = "tmf629.customer-management"

log = logging.getLogger(__name__)


class Malformed(Exception):
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# Error details travel in a trailer, which clients cap (grpcio: 16 KiB of metadata): an
# answer about bad input must not itself be too big to arrive.
MAX_VIOLATIONS = 20
MAX_TEXT = 120
MAX_MESSAGE = 1000


def _short(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _counted(error: DomainError) -> str:
    count = len(getattr(error, "violations", ()))
    if count <= MAX_VIOLATIONS:
        return error.message
    return f"{error.message} ({count} violations; the first {MAX_VIOLATIONS} are listed)"


def status_of(error: DomainError) -> status_pb2.Status:
    metadata = {_short(k): _short(v) for k, v in error.metadata.items()}
    details = [error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata)]
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_short(v.field), description=_short(v.description)
                    )
                    for v in error.violations[:MAX_VIOLATIONS]
                ]
            )
        )
    if isinstance(error, FailedPrecondition) and error.violations:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=_short(v.subject), description=_short(v.description)
                    )
                    for v in error.violations[:MAX_VIOLATIONS]
                ]
            )
        )
    if error.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=error.retry_delay))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(
        code=code_pb2.Code.Value(error.code),
        message=_short(_counted(error), MAX_MESSAGE),
        details=packed,
    )


def answer(error: Exception) -> Any:
    """The rich status of `error`: grpc_status's Status (code, details, trailing metadata)."""
    if isinstance(error, Malformed):
        failure: DomainError = InvalidArgument(
            f"the request message does not parse: {error.error}", reason="MALFORMED_REQUEST"
        )
    else:
        failure = as_domain_error(error)
    return rpc_status.to_status(status_of(failure))


def safe_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning Malformed instead of raising: grpcio would answer a request
    that does not parse with UNKNOWN and the exception's name."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:
            return Malformed(error)

    return deserialize
