"""What the people who run the service see: Prometheus metrics that move with the calls,
one JSON log line per call with the documented keys and no personal data, start-up and
shutdown lines, and OpenTelemetry traces only when asked for."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from faults import ServerProcess, stub
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from customer_management.config import Config
from customer_management.server import Server
from helpers import fails, latest_token
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.common_pb2 import ContactMedium, Medium
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import WatchEventsRequest

SECRET_NAME = "Zelda Quixotic-Name"
SECRET_EMAIL = "zelda.quixotic@example.org"
RPC_KEYS = {"method", "code", "duration_ms", "caller", "request_id", "peer"}


def personal() -> Customer:
    return Customer(
        name=SECRET_NAME,
        contact_medium=[ContactMedium(type="Email", medium=Medium(email_address=SECRET_EMAIL))],
    )


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def handled(samples: dict[Any, float], method: str, code: str) -> float:
    labels = {
        "grpc_type": "server_stream" if method == "WatchEvents" else "unary",
        "grpc_service": "tmf629.v1.CustomerManagementService",
        "grpc_method": method,
        "grpc_code": code,
    }
    return samples.get(("grpc_server_handled_total", tuple(sorted(labels.items()))), 0.0)


def gauge(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@asynccontextmanager
async def serving(url: str, **settings: Any) -> AsyncIterator[tuple[Server, Any]]:
    exporter = settings.pop("_exporter", None)
    server = Server(Config(port=0, database_url=url, **settings), span_exporter=exporter)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, stub(channel)
    finally:
        await server.stop(grace=1)


async def eventually(check: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.1)


async def test_metrics_move_with_the_calls(own_database: str) -> None:
    async with serving(own_database, metrics_port=0, health_interval=0.1) as (server, service):
        port = server.metrics.port
        before = await asyncio.to_thread(scrape, port)
        made = await service.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="m")))
        await service.GetCustomer(pb.GetCustomerRequest(id=made.id))
        await fails(
            service.GetCustomer(pb.GetCustomerRequest(id="nope")), grpc.StatusCode.NOT_FOUND
        )
        watch = service.WatchEvents(WatchEventsRequest(resume_token=await latest_token(server)))
        await service.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=Customer(id=made.id, description="d"))
        )
        assert (await watch.read()).HasField("event")
        after = await asyncio.to_thread(scrape, port)

        assert handled(after, "CreateCustomer", "OK") == handled(before, "CreateCustomer", "OK") + 1
        assert handled(after, "GetCustomer", "OK") == handled(before, "GetCustomer", "OK") + 1
        assert (
            handled(after, "GetCustomer", "NOT_FOUND")
            == handled(before, "GetCustomer", "NOT_FOUND") + 1
        )
        get = (
            ("grpc_method", "GetCustomer"),
            ("grpc_service", "tmf629.v1.CustomerManagementService"),
            ("grpc_type", "unary"),
        )
        assert after[("grpc_server_handling_seconds_count", get)] == 2 + before.get(
            ("grpc_server_handling_seconds_count", get), 0
        )
        assert gauge(after, "cm_watchers") == 1

        def caught_up() -> None:
            now = scrape(port)
            assert gauge(now, "cm_events_newest_committed_seq") >= 2  # the create and update
            assert gauge(now, "cm_event_stream_lag_events") == 0
            assert gauge(now, "cm_events_delivered_seq") == gauge(
                now, "cm_events_newest_committed_seq"
            )

        await eventually(lambda: caught_up())
        watch.cancel()
        await eventually(lambda: _equal(gauge(scrape(port), "cm_watchers"), 0))
        finished = scrape(port)
        assert handled(finished, "WatchEvents", "CANCELLED") == 1 + handled(
            after, "WatchEvents", "CANCELLED"
        )


def _equal(a: Any, b: Any) -> None:
    assert a == b, (a, b)


async def test_database_gauges_count_the_work_holding_and_waiting_for_connections(
    own_database: str,
) -> None:
    """A known state: `POOL` reads holding the read connections and 2 more queued behind
    them, one write holding the writer and 2 more queued: the gauges say exactly that,
    and 0 once it is over."""
    pool = 3
    server = Server(
        Config(
            port=0,
            database_url=own_database,
            metrics_port=0,
            pool_size=pool,
            pool_timeout=30,  # queued work is not given up on while the test looks
            health_interval=3600,  # no health ping takes a connection meanwhile
        )
    )
    server.broker.poll_interval = 3600  # nor does the outbox poll
    await server.start()
    gate = threading.Event()
    work: list[asyncio.Future[Any]] = []

    def held(_session: Any, *_run: Any) -> None:
        assert gate.wait(20), "the test never let the database work go"

    def database_gauges() -> dict[str, float]:
        now = scrape(server.metrics.port)
        return {
            f"{name}/{side}": gauge(now, f"cm_db_{name}", pool=side)
            for name in ("connections_in_use", "requests_waiting")
            for side in ("read", "write")
        }

    def state(read: int, read_waiting: int, write: int, write_waiting: int) -> dict[str, float]:
        return {
            "connections_in_use/read": read,
            "connections_in_use/write": write,
            "requests_waiting/read": read_waiting,
            "requests_waiting/write": write_waiting,
        }

    try:
        await eventually(lambda: _equal(database_gauges(), state(0, 0, 0, 0)))
        work += [asyncio.ensure_future(server.database.read(held)) for _ in range(pool + 2)]
        work.append(asyncio.ensure_future(server.database.write(held)))
        await eventually(lambda: _equal(database_gauges(), state(pool, 2, 1, 0)))
        # Submitted once the first write holds the writer: they wait (a write submitted
        # with it would have joined its batch).
        work += [asyncio.ensure_future(server.database.write(held)) for _ in range(2)]
        await eventually(lambda: _equal(database_gauges(), state(pool, 2, 1, 2)))
        gate.set()
        await asyncio.wait_for(asyncio.gather(*work), 10)
        await eventually(lambda: _equal(database_gauges(), state(0, 0, 0, 0)))
    finally:
        gate.set()
        await asyncio.gather(*work, return_exceptions=True)
        await server.stop(grace=1)


async def test_one_json_line_per_call_and_start_and_stop_lines(
    own_database: str, tmp_path: Path
) -> None:
    url = own_database
    if url.startswith("postgresql"):  # a password, which no line may show (trust auth ignores it)
        url = make_url(url).set(password="hunter2-secret").render_as_string(hide_password=False)
    log = tmp_path / "server.log"
    server = ServerProcess(
        url, log, "--log-level", "INFO", "--log-format", "json", "--rpc-log-level", "INFO"
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            service = stub(channel)
            made = await service.CreateCustomer(
                pb.CreateCustomerRequest(customer=personal(), request_id="req-42")
            )
            await service.GetCustomer(
                pb.GetCustomerRequest(id=made.id), metadata=(("x-request-id", "trace-7"),)
            )
            await fails(
                service.GetCustomer(pb.GetCustomerRequest(id="nope")), grpc.StatusCode.NOT_FOUND
            )
        server.terminate()
        assert await server.exited(15) == 0
    finally:
        await server.stop()
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line JSON
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    calls = [line for line in lines if line["logger"] == "customer_management.rpc"]
    ours = [c for c in calls if c["method"].startswith("/tmf629.v1.CustomerManagementService/")]
    assert [(c["method"].rsplit("/", 1)[1], c["code"], c["request_id"]) for c in ours] == [
        ("CreateCustomer", "OK", "req-42"),
        ("GetCustomer", "OK", "trace-7"),
        ("GetCustomer", "NOT_FOUND", ""),
    ]
    for call in ours:
        assert call.keys() >= RPC_KEYS
        assert call["caller"] == "anonymous" and call["peer"].startswith("ipv4:127.0.0.1:")
        assert isinstance(call["duration_ms"], float) and call["duration_ms"] > 0
    events = [line.get("event") for line in lines]
    assert events.index("serving") < events.index("shutting_down") < events.index("stopped")
    serving = lines[events.index("serving")]
    assert serving["grpc"] == server.address and serving["database"]
    for secret in (SECRET_NAME, SECRET_EMAIL, "hunter2-secret"):
        assert secret not in text


async def test_traces_of_calls_and_statements_only_when_configured(
    own_database: str,
) -> None:
    exporter = InMemorySpanExporter()
    async with serving(own_database, otlp_endpoint="memory", _exporter=exporter) as (
        server,
        service,
    ):
        made = await service.CreateCustomer(pb.CreateCustomerRequest(customer=personal()))
        await service.GetCustomer(pb.GetCustomerRequest(id=made.id))
        await service.ListCustomers(pb.ListCustomersRequest(filter=f'name = "{SECRET_NAME}"'))
        server.tracing.provider.force_flush()
        spans = exporter.get_finished_spans()
    names = [span.name for span in spans]
    assert "/tmf629.v1.CustomerManagementService/GetCustomer" in names
    assert "/tmf629.v1.CustomerManagementService/CreateCustomer" in names
    statements = [s for s in spans if s.attributes and "db.statement" in s.attributes]
    assert any("INSERT INTO customer" in str(s.attributes["db.statement"]) for s in statements)
    # Statements carry placeholders, never the values bound to them.
    recorded = [(s.name, s.attributes, [e.attributes for e in s.events]) for s in spans]
    for secret in (SECRET_NAME, SECRET_EMAIL):
        assert secret not in repr(recorded)


def test_tracing_off_loads_no_opentelemetry() -> None:
    """Off, the server runs without a line of OpenTelemetry: nothing to cost anything."""
    program = (
        "import asyncio, sys, tempfile\n"
        "from customer_management.config import Config\n"
        "from customer_management.server import Server\n"
        "async def main():\n"
        "    s = Server(Config(port=0, database_url=f'sqlite:///{tempfile.mkdtemp()}/t.db'))\n"
        "    await s.start(); await s.stop(grace=0)\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def collector() -> Iterator[tuple[Collector, int]]:
    received = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield received, port
    finally:
        server.stop(None)


async def test_traces_reach_an_otlp_collector(tmp_path: Path) -> None:
    for received, port in collector():
        server = ServerProcess(
            f"sqlite:///{tmp_path / 'otlp.db'}",
            tmp_path / "server.log",
            "--otlp-endpoint",
            f"http://127.0.0.1:{port}",
        )
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                await stub(channel).CreateCustomer(
                    pb.CreateCustomerRequest(customer=Customer(name="o"))
                )
            server.terminate()  # stopping sends what is buffered
            assert await server.exited(15) == 0
        finally:
            await server.stop()
        spans = [
            (resource.resource, span.name)
            for request in received.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        assert any(name.endswith("/CreateCustomer") for _, name in spans), spans
        service_names = {
            attribute.value.string_value
            for resource, _ in spans
            for attribute in resource.attributes
            if attribute.key == "service.name"
        }
        assert service_names == {"customer-management"}
