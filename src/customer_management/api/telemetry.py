"""The RPC metrics: the gRPC ecosystem's server metrics (the names go-grpc-prometheus
and py-grpc-prometheus use), which api/handlers.py moves for every call."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
