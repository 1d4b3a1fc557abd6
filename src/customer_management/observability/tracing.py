"""OpenTelemetry traces of RPCs and database statements, sent to an OTLP collector.

Off unless `--otlp-endpoint` is set, and then nothing of OpenTelemetry is even
imported: the service without tracing runs exactly the code it runs without this file.
Needs the `tracing` extra (`pip install 'customer-management[tracing]'`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE = "customer-management"


class Tracing:
    """A tracer provider of our own (not the process-wide one, so tests and embedders
    choose), its gRPC server interceptor, and the SQLAlchemy engines it instruments."""

    def __init__(self, endpoint: str, exporter: SpanExporter | None = None) -> None:
        try:
            from opentelemetry.instrumentation.grpc import aio_server_interceptor
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as error:  # the extra is not installed
            raise SystemExit(
                "--otlp-endpoint needs OpenTelemetry: pip install 'customer-management[tracing]'"
            ) from error
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http:"))
        self.provider: TracerProvider = TracerProvider(
            resource=Resource.create({"service.name": SERVICE})
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.interceptor: Any = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self.provider
        )
        self._instrumented: list[Any] = []

    def instrument(self, *engines: Engine) -> None:
        """Spans for the statements of these engines only: the instrumentor's own
        `instrument()` would patch `create_engine` for the whole process."""
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeter

        connections = NoOpMeter(__name__).create_up_down_counter("db.client.connections.usage")
        tracer = self.provider.get_tracer(__name__)
        for engine in engines:
            tracing = EngineTracer(tracer, engine, connections)  # type: ignore[no-untyped-call]
            self._instrumented.append(tracing)

    def stop(self) -> None:
        self.provider.shutdown()  # sends what is still buffered
