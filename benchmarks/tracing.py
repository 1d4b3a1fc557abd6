"""`make bench`, tracing phase: what tracing costs on, and that off it costs nothing.

Three servers on one SQLite file: tracing off, tracing off again (the noise between two
identical servers is the yardstick for "no measurable overhead"), and tracing on,
exporting every span over OTLP/gRPC to a collector in this process that drops them.
GetCustomer is driven against each in interleaved rounds with h2load.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer

OFF_TARGET = 0.95
"""Tracing off against its twin: within the noise."""
METHOD = "tmf629.v1.CustomerManagementService/GetCustomer"
Serve = Callable[..., AbstractContextManager[tuple[str, Any]]]
Load = Callable[[str, str, Path], tuple[float, float, float]]


@dataclass(frozen=True)
class TracingRun:
    off: float
    twin: float
    on: float
    logged: float
    """Tracing off, with the one log line per RPC written (`--rpc-log-level INFO`)."""

    @property
    def off_ratio(self) -> float:
        """The first server's throughput against its identical twin's."""
        return min(self.off, self.twin) / max(self.off, self.twin)

    @property
    def on_ratio(self) -> float:
        return self.on / statistics.mean((self.off, self.twin))

    @property
    def logged_ratio(self) -> float:
        return self.logged / statistics.mean((self.off, self.twin))


def met(run: TracingRun) -> bool:
    return run.off_ratio >= OFF_TARGET


@contextmanager
def collector() -> Iterator[int]:
    """An OTLP/gRPC trace collector that accepts everything and keeps nothing."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Drop(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Drop(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def tracing_run(workdir: Path, serve: Serve, load: Load, rounds: int) -> TracingRun:
    url = f"sqlite:///{workdir / 'tracing.db'}"
    with collector() as port, ExitStack() as stack:
        targets = {
            "off": stack.enter_context(serve(url, workdir))[0],
            "twin": stack.enter_context(serve(url, workdir))[0],
            "on": stack.enter_context(
                serve(url, workdir, "--otlp-endpoint", f"http://127.0.0.1:{port}")
            )[0],
            # The others log at WARNING, as every bench server does: this one writes the RPC lines.
            "logs": stack.enter_context(
                serve(url, workdir, "--log-level", "INFO", "--rpc-log-level", "INFO")
            )[0],
        }
        with grpc.insecure_channel(targets["off"]) as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            made = stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="t")))
        body = workdir / "tracing-get.bin"
        data = pb.GetCustomerRequest(id=made.id).SerializeToString()
        body.write_bytes(b"\x00" + len(data).to_bytes(4, "big") + data)  # gRPC framing
        rps: dict[str, list[float]] = {name: [] for name in targets}
        for round_ in range(1, rounds + 1):
            for name, target in targets.items():
                rps[name].append(load(target, METHOD, body)[0])
                print(
                    f"[tracing] round {round_}/{rounds} {name:4} GetCustomer"
                    f" {rps[name][-1]:8.0f} req/s",
                    flush=True,
                )
    median = {name: float(statistics.median(values)) for name, values in rps.items()}
    return TracingRun(median["off"], median["twin"], median["on"], median["logs"])


def report(run: TracingRun | None, args: argparse.Namespace) -> str:
    if run is None:
        return ""
    bars = [("off", run.off), ("twin", run.twin), ("on", run.on), ("logs", run.logged)]
    top = max(rps for _, rps in bars)
    return "\n".join(
        [
            "",
            "## Tracing",
            "",
            "GetCustomer on SQLite against four servers on one database, in interleaved rounds"
            f" (h2load as above, {args.tracing_rounds} rounds, medians): tracing off, an identical"
            " twin (their difference is this machine's noise), tracing on, exporting every"
            " span over OTLP/gRPC to a local collector that drops them, and tracing off with the"
            " one log line per RPC written (`--rpc-log-level INFO`; the bench's servers"
            " otherwise log at WARNING). Off, the server imports nothing of OpenTelemetry"
            " (tests/test_operability.py checks), so it runs the code a build without tracing"
            f" would; the target is that off stays within {1 - OFF_TARGET:.0%} of its twin.",
            "",
            "| server | GetCustomer req/s | ratio |",
            "|---|---:|---:|",
            f"| tracing off | {run.off:.0f} | {run.off_ratio:.2f} to its twin |",
            f"| tracing off (twin) | {run.twin:.0f} | |",
            f"| tracing on | {run.on:.0f} | {run.on_ratio:.2f} to off |",
            f"| RPC log lines on | {run.logged:.0f} | {run.logged_ratio:.2f} to off |",
            "",
            "```",
            *(f"{name:5} {'█' * round(rps / top * 40)} {rps:.0f}" for name, rps in bars),
            "```",
            f"(met: {'yes' if met(run) else '**no**'})",
            "",
        ]
    )
