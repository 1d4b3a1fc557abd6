"""The one place where failures become rich gRPC statuses (google.rpc.Status).

Domain exceptions carry their code, reason and violations; request bytes that do not
parse become INVALID_ARGUMENT instead of grpcio's UNKNOWN; anything unexpected is
logged and answered INTERNAL without its details.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from customer_management.domain.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from customer_management.store.errors import (
    StoreBusy,
    StoreCancelled,
    StoreConflict,
    StoreUnavailable,
)

DOMAIN = "tmf629.customer-management"

if TYPE_CHECKING:  # grpc-stubs makes it generic; at run time it is not
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
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


def as_domain_error(error: Exception) -> DomainError:
    if isinstance(error, DomainError):
        return error
    if isinstance(error, StoreUnavailable):
        return Unavailable(f"the database is unavailable: {error}")
    if isinstance(error, StoreBusy):
        return Unavailable(f"the database is busy: {error}; retry", reason="DATABASE_BUSY")
    if isinstance(error, StoreCancelled):
        # Only a caller still waiting sees this: the work ran past the work timeout.
        return DomainError(
            f"the database work took too long and was stopped: {error}",
            code="DEADLINE_EXCEEDED",
            reason="DATABASE_TIMEOUT",
        )
    if isinstance(error, StoreConflict):
        log.info("constraint refused a write: %s", error)
        return DomainError(
            "a concurrent change conflicts with this request; read the resources again and retry",
            code="ABORTED",
            reason="CONCURRENT_CHANGE",
        )
    if isinstance(error, Malformed):
        return InvalidArgument(
            f"the request message does not parse: {error.error}", reason="MALFORMED_REQUEST"
        )
    log.exception("unexpected error", exc_info=error)
    return DomainError("internal error", code="INTERNAL", reason="INTERNAL")


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
    status = rpc_status.to_status(status_of(as_domain_error(error)))
    await context.abort(status.code, status.details, status.trailing_metadata)


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:
            return Malformed(error)

    return deserialize


class WrappingInterceptor(_Interceptor):
    """Wraps each method's handler once and keeps it, so a call costs a dict lookup.

    Names no service has are wrapped every time and never kept: callers choose them.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        wrapped: grpc.RpcMethodHandler[Any, Any] = self.wrap(method, handler)
        if handler is not None and handler is not UNKNOWN_METHOD:
            self._handlers[method] = wrapped
        return wrapped

    def wrap(self, method: str, handler: Any) -> Any:
        raise NotImplementedError


class ErrorInterceptor(WrappingInterceptor):
    """Wraps every unary-request method of every service with the error mapping."""

    def wrap(self, method: str, handler: Any) -> Any:
        return UNKNOWN_METHOD if handler is None else _wrap(handler)


Context = grpc.aio.ServicerContext[Any, Any]


@asynccontextmanager
async def _answered(request: Any, context: Context) -> AsyncIterator[None]:
    """Turns whatever the method raises into its rich status."""
    try:
        if isinstance(request, Malformed):
            raise request
        yield
    except grpc.aio.AbortError:
        raise
    except Exception as error:
        await abort(context, error)


async def _unknown_method(request: bytes, context: Context) -> None:
    await abort(
        context, DomainError("no such method", code="UNIMPLEMENTED", reason="UNKNOWN_METHOD")
    )


UNKNOWN_METHOD: Any = grpc.unary_unary_rpc_method_handler(_unknown_method)


def _wrap(handler: Any) -> Any:
    """The handler with safe deserialisation and errors answered; request-streaming
    methods (reflection) are left as they are."""
    safe = _safe(handler.request_deserializer)
    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            async with _answered(request, context):
                return await behavior(request, context)

        return handler._replace(unary_unary=unary_unary, request_deserializer=safe)
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        stream = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with _answered(request, context), aclosing(stream(request, context)) as out:
                async for response in out:
                    yield response

        return handler._replace(unary_stream=unary_stream, request_deserializer=safe)
    if handler.unary_stream is not None:
        # A streaming method that writes with context.write (health's Watch).
        written = handler.unary_stream

        async def unary_written(request: Any, context: Context) -> None:
            async with _answered(request, context):
                await written(request, context)

        return handler._replace(unary_stream=unary_written, request_deserializer=safe)
    return handler
