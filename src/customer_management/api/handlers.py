"""Every method's handler, wrapped once when it is registered, with what each call needs.

A call is counted and timed, its caller identified and checked against the scope the
method needs, turned away at once when the service is past its capacity, audited when
it changes something, and whatever it raises is answered as a rich status. One
coroutine per call does all of that: grpc.aio interceptors would add a coroutine per
concern and look the handler up again on every call, which cost a Get about a fifth of
its throughput.

A method that returns an Encoded resource has its bytes sent as they are: a Get answers
with the stored wire form of its resource, which is never parsed and serialised again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from customer_management.api.admission import Admission, Limiter
from customer_management.api.errors import Malformed, answer, safe_deserializer
from customer_management.api.telemetry import RpcMetrics
from customer_management.domain.callers import current as current_caller
from customer_management.domain.callers import deadline
from customer_management.domain.errors import DomainError
from customer_management.domain.wire import Encoded
from customer_management.edge import methods
from customer_management.edge.callers import Access, Callers, Credentials, access, subject

if TYPE_CHECKING:  # grpc-stubs makes these generic; at run time they are not
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
    Generic = grpc.GenericRpcHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
    Generic = grpc.GenericRpcHandler

rpc_log = logging.getLogger("customer_management.rpc")
audit_log = logging.getLogger("customer_management.audit")
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Policy:
    """What the calls need that is the same for every method."""

    metrics: RpcMetrics
    rpc_log_level: int
    callers: Callers | None = None
    reflection_open: bool = True
    admission: Admission | None = None


class Wrapper:
    """Wraps handlers with the Policy; `registry(server)` stands in for the server in
    the `add_…_to_server` functions of the services grpc and its libraries define."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._open = OPEN_PREFIXES + (REFLECTION_PREFIXES if policy.reflection_open else ())

    def registry(self, server: grpc.aio.Server) -> Registry:
        return Registry(server, self)

    def unknown(self) -> Generic:
        """The last handler asked: any other method name gets a rich UNIMPLEMENTED (or,
        with authentication, PERMISSION_DENIED), counted under one `unknown` label."""
        handler = self.wrap("", grpc.unary_unary_rpc_method_handler(_unknown_method))
        return _Fallback(handler)

    def wrap(self, path: str, handler: Handler) -> Handler:
        """`handler` with every call observed, checked and answered (request-streaming
        methods, reflection only, get the telemetry alone)."""
        service, _, name = path.lstrip("/").rpartition("/")
        known = bool(path)
        policy = self.policy
        unary = handler.unary_unary is not None
        labels = ("unary" if unary else "server_stream", service or UNKNOWN, name or UNKNOWN)
        call = _Observed(
            policy,
            labels,
            path=path or UNKNOWN,
            method=self._method(path) if policy.callers is not None else None,
            limiter=policy.admission.gate(name) if policy.admission and known else None,
        )
        if handler.request_streaming:
            return handler
        safe = safe_deserializer(handler.request_deserializer)
        serializer = _passthrough(handler.response_serializer)
        if unary:
            behavior = handler.unary_unary
            assert behavior is not None

            async def unary_unary(request: Any, context: Context) -> Any:
                return await call.unary(behavior, request, context)

            return handler._replace(  # type: ignore[attr-defined,no-any-return]
                unary_unary=unary_unary, request_deserializer=safe, response_serializer=serializer
            )
        stream = handler.unary_stream
        assert stream is not None
        if inspect.isasyncgenfunction(stream):

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                async for response in call.stream(stream, request, context):
                    yield response

            return handler._replace(  # type: ignore[attr-defined,no-any-return]
                unary_stream=unary_stream, request_deserializer=safe
            )

        async def unary_written(request: Any, context: Context) -> None:  # health's Watch
            await call.unary(stream, request, context)

        return handler._replace(  # type: ignore[attr-defined,no-any-return]
            unary_stream=unary_written, request_deserializer=safe
        )

    def _method(self, path: str) -> methods.Method | None:
        """The method whose scope a call needs; None for health (and reflection, if open),
        which every caller may call; a method nobody may call for any other path."""
        if path.startswith(self._open):
            return None
        return methods.by_path(path) or methods.Method(path, None, mutates=False)


class _Observed:
    """One method's calls: the per-method values are looked up once, here."""

    def __init__(
        self,
        policy: Policy,
        labels: tuple[str, str, str],
        *,
        path: str,
        method: methods.Method | None,
        limiter: Limiter | None,
    ) -> None:
        metrics = policy.metrics
        self.started = metrics.started.labels(*labels)
        self.timing = metrics.handling.labels(*labels)
        self.handled = metrics.handled
        self.labels = labels
        self.by_code: dict[str, Any] = {}
        self.level = policy.rpc_log_level
        self.path = path
        self.name = labels[2]
        self.audited = (methods.by_path(path) or _UNAUDITED).mutates
        self.callers = policy.callers
        self.method = method
        self.limiter = limiter

    async def unary(self, behavior: Any, request: Any, context: Context) -> Any:
        self.started.inc()
        begun, code, response, caller = time.perf_counter(), "OK", None, None
        limiter = None
        remaining = context.time_remaining()
        if remaining is not None:
            deadline.set(asyncio.get_running_loop().time() + remaining)
        try:
            if type(request) is Malformed:
                raise request
            with self._access(context) as granted:
                caller = granted.identity
                if granted.refused is not None:
                    raise granted.refused
                if self.limiter is not None:
                    if not await self.limiter.enter(remaining):
                        code = "RESOURCE_EXHAUSTED"
                        rejection = self.limiter.rejection
                        await context.abort(
                            rejection.code, rejection.details, rejection.trailing_metadata
                        )
                    limiter = self.limiter
                response = await behavior(request, context)
                return response
        except grpc.aio.AbortError:
            code = _aborted(context)
            raise
        except Exception as error:
            status = answer(error)
            code = status.code.name
            await context.abort(status.code, status.details, status.trailing_metadata)
        except BaseException:
            code = _cancelled(context)
            raise
        finally:
            elapsed = self._done(begun, code, request, context, response, caller)
            if limiter is not None:
                limiter.leave(elapsed, ok=code == "OK")

    async def stream(self, stream: Any, request: Any, context: Context) -> AsyncIterator[Any]:
        self.started.inc()
        begun, code, caller = time.perf_counter(), "OK", None
        try:
            if type(request) is Malformed:
                raise request
            with self._access(context) as granted:
                caller = granted.identity
                if granted.refused is not None:
                    raise granted.refused
                async with aclosing(stream(request, context)) as responses:
                    async for response in responses:
                        yield response
        except grpc.aio.AbortError:
            code = _aborted(context)
            raise
        except Exception as error:
            status = answer(error)
            code = status.code.name
            await context.abort(status.code, status.details, status.trailing_metadata)
        except BaseException:
            code = _cancelled(context)
            raise
        finally:
            self._done(begun, code, request, context, None, caller)

    def _access(self, context: Context) -> Access:
        """The caller's access to this method, read from the call's metadata and TLS."""
        if self.method is None:
            return _OPEN
        metadata = context.invocation_metadata() or ()
        name = next(iter(context.auth_context().get("x509_common_name") or ()), None)
        credentials = Credentials(
            str(next((value for key, value in metadata if key == "authorization"), "")),
            subject(name.decode() if name is not None else None),
        )
        return access(self.callers, self.method, credentials)

    def _done(
        self,
        begun: float,
        code: str,
        request: Any,
        context: Context,
        response: Any,
        caller: str | None,
    ) -> float:
        """Counts, times and logs the call; returns how long it took."""
        elapsed = time.perf_counter() - begun
        self.timing.observe(elapsed)
        handled = self.by_code.get(code)
        if handled is None:
            handled = self.by_code[code] = self.handled.labels(*self.labels, code)
        handled.inc()
        who = caller or current_caller.get()
        if self.audited:
            audit_log.info(
                "audit",
                extra={
                    "audit": self.name,
                    "caller": who,
                    "id": _resource_id(request, response),
                    "outcome": code,
                },
            )
        if rpc_log.isEnabledFor(self.level):
            rpc_log.log(
                self.level,
                "rpc",
                extra={
                    "method": self.path[:200],
                    "code": code,
                    "duration_ms": round(elapsed * 1000, 3),
                    "caller": who,
                    "request_id": _request_id(request, context),
                    "peer": context.peer(),
                },
            )
        return elapsed


_OPEN = Access(None, None)
"""The access to a method every caller may call: nothing to check, nothing to set."""
_UNAUDITED = methods.Method("", None, mutates=False)


async def _unknown_method(request: bytes, context: Context) -> None:
    raise DomainError("no such method", code="UNIMPLEMENTED", reason="UNKNOWN_METHOD")


class _Fallback(Generic):
    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler:
        return self._handler


class Registry:
    """What grpc's `add_…_to_server` functions call on a server, wrapping each handler."""

    def __init__(self, server: grpc.aio.Server, wrapper: Wrapper) -> None:
        self._server = server
        self._wrapper = wrapper

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        self._server.add_registered_method_handlers(  # type: ignore[attr-defined]
            service,
            {name: self._wrapper.wrap(f"/{service}/{name}", h) for name, h in handlers.items()},
        )

    def add_generic_rpc_handlers(self, handlers: Iterable[Generic]) -> None:
        """Registered methods are found before these; they answer only what a library
        registers nowhere else, wrapped all the same."""
        self._server.add_generic_rpc_handlers([_Wrapped(h, self._wrapper) for h in handlers])

    def add_service(self, descriptor: ServiceDescriptor, servicer: object) -> None:
        """Registers `servicer`'s unary and server-streaming methods by the service's
        descriptor: the method names and message types come from the .proto, and a
        method the servicer lacks fails here, at start-up."""
        handlers = {}
        for method in descriptor.methods:
            behavior = getattr(servicer, method.name)
            request = GetMessageClass(method.input_type)
            response = GetMessageClass(method.output_type)
            make = (
                grpc.unary_stream_rpc_method_handler
                if method.server_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            handlers[method.name] = make(
                behavior,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        self.add_registered_method_handlers(descriptor.full_name, handlers)


class _Wrapped(Generic):
    def __init__(self, inner: Generic, wrapper: Wrapper) -> None:
        self._inner = inner
        self._wrapper = wrapper
        self._wrapped: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method: str = handler_call_details.method
        found = self._wrapped.get(method)
        if found is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None  # nothing is kept for names callers make up
            found = self._wrapped[method] = self._wrapper.wrap(method, handler)
        return found


def _passthrough(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    if serializer is None:
        return None

    def serialize(response: Any) -> bytes:
        return response.wire if type(response) is Encoded else serializer(response)

    return serialize


def _resource_id(request: Any, response: Any) -> str:
    """The id a mutation concerns: the created resource's, or the one the request names."""
    if type(response) is Encoded:
        return response.id
    for message in (response, request):
        descriptor = getattr(message, "DESCRIPTOR", None)
        if descriptor is None:
            continue
        if "id" in descriptor.fields_by_name and message.id:
            return str(message.id)
        for field in descriptor.fields:
            if field.message_type is not None and "id" in field.message_type.fields_by_name:
                inner: Any = getattr(message, field.name)
                if inner.id:
                    return str(inner.id)
    return ""


def _request_id(request: Any, context: Context) -> str:
    """The caller's request id: a mutation's `request_id`, else `x-request-id` metadata."""
    value = getattr(request, "request_id", "")
    if value:
        return str(value)
    for key, item in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(item)[:128]
    return ""


def _aborted(context: Context) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _cancelled(context: Context) -> str:
    """The caller went away (CANCELLED), or its deadline passed."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
