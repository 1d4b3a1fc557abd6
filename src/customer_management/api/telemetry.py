"""One interceptor observes every call: it counts it, times it and logs it.

Prometheus gets the gRPC ecosystem's server metrics (the names go-grpc-prometheus and
py-grpc-prometheus use); the log gets one structured line per call with who called
what, how it ended and how long it took, never what the request held.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from customer_management.api.errors import UNKNOWN_METHOD, Context, WrappingInterceptor
from customer_management.domain.callers import current as current_caller

log = logging.getLogger("customer_management.rpc")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds; a Get is a few milliseconds, a Create tens under load, a watch stream hours
(its time is counted too, in the last bucket)."""


class RpcMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            (*labels, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its end on the server.",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )


class TelemetryInterceptor(WrappingInterceptor):
    """Outermost, so it sees every call as its caller does (refused ones too)."""

    def __init__(self, metrics: RpcMetrics, level: int) -> None:
        super().__init__()
        self._metrics = metrics
        self._level = level

    def wrap(self, method: str, handler: Any) -> Any:
        if handler is None:
            return None
        service, _, name = method.lstrip("/").rpartition("/")
        if handler is UNKNOWN_METHOD:  # callers choose these names: one label for them all
            service, name, method = "unknown", "unknown", method[:200]
        kind = "unary" if handler.unary_unary is not None else "server_stream"
        labels = (kind, service or "unknown", name)
        started = self._metrics.started.labels(*labels)
        timing = self._metrics.handling.labels(*labels)

        @contextmanager
        def observed(context: Context, request: Any) -> Iterator[None]:
            started.inc()
            begun, code = time.perf_counter(), "OK"
            try:
                yield
            except BaseException as error:
                code = _code(context, error)
                raise
            finally:
                elapsed = time.perf_counter() - begun
                timing.observe(elapsed)
                self._metrics.handled.labels(*labels, code).inc()
                if log.isEnabledFor(self._level):
                    log.log(
                        self._level,
                        "rpc",
                        extra={
                            "method": method,
                            "code": code,
                            "duration_ms": round(elapsed * 1000, 3),
                            "caller": current_caller.get(),
                            "request_id": _request_id(request, context),
                            "peer": context.peer(),
                        },
                    )

        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                with observed(context, request):
                    return await behavior(request, context)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            stream = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                with observed(context, request):
                    async with aclosing(stream(request, context)) as responses:
                        async for response in responses:
                            yield response

            return handler._replace(unary_stream=unary_stream)
        if handler.unary_stream is not None:  # written with context.write (health's Watch)
            written = handler.unary_stream

            async def unary_written(request: Any, context: Context) -> None:
                with observed(context, request):
                    await written(request, context)

            return handler._replace(unary_stream=unary_written)
        return handler


def _code(context: Context, error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _request_id(request: Any, context: Context) -> str:
    """The caller's request id: a mutation's `request_id`, else `x-request-id` metadata."""
    value = getattr(request, "request_id", "")
    if value:
        return str(value)
    for key, item in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(item)[:128]
    return ""
