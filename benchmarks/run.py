"""`make bench`: throughput of Check, GetCustomer and CreateCustomer, side by side.

Starts `customer-management serve` on SQLite and on PostgreSQL and drives each RPC with
h2load (nghttp2's HTTP/2 load generator, in C, so the client is not the bottleneck) over
many concurrent streams. `grpc.health.v1.Health/Check` is the framework's own floor;
each RPC is reported as a ratio to it, measured in the same run, in interleaved rounds,
so a noisy shared machine moves both sides alike. Writes BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import psycopg
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks import history as bench_history
from benchmarks import load as bench_load
from benchmarks import overload as bench_overload
from benchmarks import reads as bench_reads
from benchmarks import relay as bench_relay
from benchmarks import scale as bench_scale
from benchmarks import tracing as bench_tracing
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import WatchEventsRequest

CREATE_TARGETS = {"sqlite": 0.4, "postgresql": 0.25}
TARGETS = {
    database: {"GetCustomer": bench_reads.GET_TARGETS[database], "CreateCustomer": create}
    for database, create in CREATE_TARGETS.items()
}
"""Each RPC's throughput as a ratio to Health/Check's on the same server."""
POSTGRES_URL = os.environ.get("CM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CUSTOMER = {
    "name": "DisplayName",
    "status": "Active",
    "description": "Description string",
    "validFor": {"startDateTime": "2013-06-19T04:00:00Z", "endDateTime": "2014-06-19T04:00:00Z"},
    "customerRank": 3,
    "relatedParty": {"id": "1", "role": "customer", "name": "John Doe"},
    "characteristic": [{"name": "hobby", "value": "chess"}, {"name": "segment", "value": "gold"}],
    "contactMedium": [
        {"type": "Email", "medium": {"emailAddress": "john.doe@example.com"}},
        {
            "type": "PostalAddress",
            "medium": {"city": "Wien", "country": "Austria", "postcode": "1020", "street1": "L7"},
        },
        {"type": "TelephoneNumber", "medium": {"type": "mobile", "number": "+436641234567"}},
    ],
    "customerCreditProfile": [{"creditRiskRating": 1, "creditScore": 700}],
}
"""The seed's Customer example with its known faults fixed: a realistic ~0.7 KB record."""


@dataclass(frozen=True)
class Run:
    database: str
    rpc: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float


def frame(message: Message) -> bytes:
    """A gRPC length-prefixed message, as h2load sends it."""
    data = message.SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


def ensure_h2load() -> str:
    found = shutil.which("h2load")
    if not found:
        sys.exit("h2load is required: `make bench` installs it (Debian package nghttp2-client)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"cm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def server(
    database_url: str, workdir: Path, *options: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = (workdir / f"serve-{port}.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("customer-management")),
            "serve",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--log-level",
            "WARNING",
            *options,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start; see {log.name}")
                time.sleep(0.2)
        yield target, process
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def h2load(
    binary: str, target: str, method: str, body: Path, args: argparse.Namespace
) -> tuple[float, float, float]:
    """Runs one load; returns requests per second, p50 and p99 latency in ms."""
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        result = subprocess.run(
            [
                binary,
                "-n",
                str(args.requests),
                "-c",
                str(args.connections),
                "-m",
                str(args.streams),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-d",
                str(body),
                f"--log-file={log.name}",
                f"http://{target}/{method}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        if f"{args.requests} succeeded" not in result.stdout:
            raise SystemExit(f"h2load saw failures for {method}:\n{result.stdout}")
        rps = next(
            float(line.split(",")[1].split()[0])
            for line in result.stdout.splitlines()
            if line.startswith("finished in")
        )
        latencies = sorted(float(line.split()[2]) / 1000 for line in log if line.strip())
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return rps, p50, p99


def bench_database(
    name: str, url: str, binary: str, args: argparse.Namespace, workdir: Path
) -> tuple[list[Run], WatchRun | None]:
    runs: list[Run] = []
    watching = None
    with server(url, workdir) as (target, process):
        customer = json_format.ParseDict(CUSTOMER, Customer())
        with grpc.insecure_channel(target) as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            created = stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer))
            before = len(stub.ListCustomers(pb.ListCustomersRequest(page_size=1000)).customers)
        bodies = {
            "Check": ("grpc.health.v1.Health/Check", frame(health_pb2.HealthCheckRequest())),
            "GetCustomer": (
                "tmf629.v1.CustomerManagementService/GetCustomer",
                frame(pb.GetCustomerRequest(id=created.id)),
            ),
            "CreateCustomer": (
                "tmf629.v1.CustomerManagementService/CreateCustomer",
                frame(pb.CreateCustomerRequest(customer=customer)),
            ),
        }
        for rpc, (_, data) in bodies.items():
            (workdir / f"{rpc}.bin").write_bytes(data)
        for round_ in range(1, args.rounds + 1):
            for rpc, (method, _) in bodies.items():
                rps, p50, p99 = h2load(binary, target, method, workdir / f"{rpc}.bin", args)
                runs.append(Run(name, rpc, round_, rps, p50, p99))
                print(
                    f"[{name}] round {round_}/{args.rounds} {rpc:15} {rps:8.0f} req/s"
                    f"  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms",
                    flush=True,
                )
        with grpc.insecure_channel(target) as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            assert stub.GetCustomer(pb.GetCustomerRequest(id=created.id)) == created
            creates = args.rounds * args.requests
            request = pb.ListCustomersRequest(page_size=1000)
            count = 0
            while True:
                page = stub.ListCustomers(request)
                count += len(page.customers)
                if not page.next_page_token:
                    break
                request.page_token = page.next_page_token
            if count != before + creates:
                raise SystemExit(f"[{name}] expected {before + creates} customers, found {count}")
        if args.watchers:
            get = (bodies["GetCustomer"][0], workdir / "GetCustomer.bin")
            watching = watch_phase(name, target, process.pid, get, binary, args)
    return runs, watching


@dataclass(frozen=True)
class WatchRun:
    database: str
    watchers: int
    writes: int
    rate: float
    delivered: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    get_without: float
    get_with: float
    rss_without_mb: float
    rss_with_mb: float

    @property
    def get_ratio(self) -> float:
        return self.get_with / self.get_without


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _watcher_process(target: str, count: int, conn: Connection) -> None:
    """A client process holding `count` WatchEvents streams (spawned by the bench)."""
    asyncio.run(_watchers(target, count, conn))


async def _watchers(target: str, count: int, conn: Connection) -> None:
    channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, count // 50))]
    latencies: list[float] = []
    seen = [0] * count
    goal: list[int] = []  # per stream, the count that ends the measurement
    live, done = asyncio.Event(), asyncio.Event()
    waiting = {"live": count, "done": count}

    async def one(i: int) -> None:
        stub = service_pb2_grpc.CustomerManagementServiceStub(channels[i % len(channels)])
        async for response in stub.WatchEvents(WatchEventsRequest()):
            if not response.HasField("event"):
                continue
            stamp = response.event.event_time
            latencies.append(time.time() - stamp.seconds - stamp.nanos / 1e9)
            seen[i] += 1
            if seen[i] == 1:  # live once it has had the warm-up event
                waiting["live"] -= 1
                if not waiting["live"]:
                    live.set()
            if goal and seen[i] == goal[i]:
                waiting["done"] -= 1
                if not waiting["done"]:
                    done.set()

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    gc.freeze()  # the client's own collector pauses would count as delivery delay
    await live.wait()
    conn.send("ready")
    expected = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    latencies.clear()
    goal.extend(n + expected for n in seen)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 120)
    conn.send(latencies)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close(None)


def watch_phase(
    name: str,
    target: str,
    pid: int,
    get: tuple[str, Path],
    binary: str,
    args: argparse.Namespace,
) -> WatchRun:
    """GetCustomer with `args.watchers` idle watch streams open, as a ratio to without;
    then the delay from a change's transaction to its delivery to every watcher."""
    method, body = get
    rss_without = rss_mb(pid)
    without = [h2load(binary, target, method, body, args)[0]]
    processes = 2
    context = multiprocessing.get_context("spawn")
    pipes, children = [], []
    for i in range(processes):
        parent, child = context.Pipe()
        share = args.watchers // processes + (i < args.watchers % processes)
        worker = context.Process(target=_watcher_process, args=(target, share, child))
        worker.start()
        pipes.append(parent)
        children.append(worker)
    customer = json_format.ParseDict(CUSTOMER, Customer())
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
        ready: set[int] = set()
        while len(ready) < processes:  # warm-up writes until every stream has had one
            stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer))
            for i, pipe in enumerate(pipes):
                if pipe.poll(0.2):
                    pipe.recv()
                    ready.add(i)
        print(f"[{name}] {args.watchers} watchers open", flush=True)
        time.sleep(1)  # the last warm-up event's fan-out is over
        rss_with = rss_mb(pid)
        with_ = [h2load(binary, target, method, body, args)[0] for _ in range(2)]
        for pipe in pipes:
            pipe.send(args.watch_writes)
        interval = 1 / args.watch_rate
        started = time.monotonic()
        for i in range(args.watch_writes):
            time.sleep(max(0.0, started + i * interval - time.monotonic()))
            stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer))
        latencies = sorted(ms * 1000 for pipe in pipes for ms in pipe.recv())
    for worker in children:
        worker.join(timeout=30)
    without.append(h2load(binary, target, method, body, args)[0])  # streams closed again
    run = WatchRun(
        database=name,
        watchers=args.watchers,
        writes=args.watch_writes,
        rate=args.watch_rate,
        delivered=len(latencies),
        p50_ms=latencies[len(latencies) // 2] if latencies else float("nan"),
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else float("nan"),
        max_ms=latencies[-1] if latencies else float("nan"),
        get_without=statistics.mean(without),
        get_with=statistics.mean(with_),
        rss_without_mb=rss_without,
        rss_with_mb=rss_with,
    )
    print(
        f"[{name}] watchers: delivered {run.delivered}/{run.watchers * run.writes},"
        f" p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms;"
        f" GetCustomer with/without watchers {run.get_ratio:.2f};"
        f" RSS {run.rss_without_mb:.0f} -> {run.rss_with_mb:.0f} MB",
        flush=True,
    )
    return run


def summarise(runs: list[Run]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for database in dict.fromkeys(run.database for run in runs):

        def median(rpc: str, field: str, database: str = database) -> float:
            values = [getattr(r, field) for r in runs if r.database == database and r.rpc == rpc]
            return float(statistics.median(values))

        check = median("Check", "rps")
        for rpc in ("Check", "GetCustomer", "CreateCustomer"):
            ratio = median(rpc, "rps") / check
            target = TARGETS[database].get(rpc)
            rows.append(
                {
                    "database": database,
                    "rpc": rpc,
                    "rps": median(rpc, "rps"),
                    "p50": median(rpc, "p50_ms"),
                    "p99": median(rpc, "p99_ms"),
                    "ratio": ratio,
                    "target": target,
                    "met": target is None or ratio >= target,
                }
            )
    return rows


def report(rows: list[dict[str, object]], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`python -m benchmarks.run`);"
        " regenerate it rather than editing it.",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, grpcio {grpc.__version__}",
        f"- load: h2load, {args.connections} connections x {args.streams} streams,"
        f" {args.requests} requests per run, {args.rounds} interleaved rounds (medians shown);"
        " PostgreSQL with synchronous_commit on, SQLite with synchronous=FULL",
        "",
        "| database | RPC | req/s | p50 ms | p99 ms | ratio to Check | target | met |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        target = f"≥ {row['target']}" if row["target"] is not None else ""
        met = "yes" if row["met"] else "**no**"
        lines.append(
            f"| {row['database']} | {row['rpc']} | {row['rps']:.0f} | {row['p50']:.2f} |"
            f" {row['p99']:.2f} | {row['ratio']:.2f} | {target} | {met} |"
        )
    lines += [
        "",
        "Throughput as a ratio to Check (each `█` is 0.05; `|` marks the target):",
        "",
        "```",
    ]
    for row in rows:
        ratio = float(str(row["ratio"]))
        cells = ["█"] * round(ratio / 0.05)
        if row["target"] is not None:
            mark = round(float(str(row["target"])) / 0.05)
            cells += [" "] * (mark + 1 - len(cells))
            cells[mark] = "|"
        lines.append(f"{row['database']:10} {row['rpc']:15} {''.join(cells)} {ratio:.2f}")
    lines += ["```", ""]
    return "\n".join(lines)


WATCH_P99_MS = 100.0
WATCH_GET_RATIO = 0.9


def watch_met(run: WatchRun) -> bool:
    complete = run.delivered == run.watchers * run.writes
    return complete and run.p99_ms <= WATCH_P99_MS and run.get_ratio >= WATCH_GET_RATIO


def watch_report(runs: list[WatchRun]) -> str:
    if not runs:
        return ""
    lines = [
        "",
        "## WatchEvents",
        "",
        f"Each database: {runs[0].watchers} WatchEvents streams open (from two client processes),"
        f" then {runs[0].writes} CreateCustomer at {runs[0].rate:g}/s. Delay is from the event's"
        " transaction time (taken before its commit) to its arrival at each watcher; GetCustomer"
        " throughput with the streams open (idle, two runs) is a ratio to without (one run"
        " before they open, one after they close). Targets: p99 ≤ 100 ms, ratio ≥ 0.9.",
        "",
        "| database | delivered | p50 ms | p99 ms | max ms | Get req/s without | with |"
        " ratio | server RSS MB without | with | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.database} | {run.delivered}/{run.watchers * run.writes} | {run.p50_ms:.1f} |"
            f" {run.p99_ms:.1f} | {run.max_ms:.1f} | {run.get_without:.0f} | {run.get_with:.0f} |"
            f" {run.get_ratio:.2f} | {run.rss_without_mb:.0f} | {run.rss_with_mb:.0f} |"
            f" {'yes' if watch_met(run) else '**no**'} |"
        )
    lines += ["", "```"]
    for run in runs:
        for label, value, target, scale in (
            ("p99 ms", run.p99_ms, WATCH_P99_MS, 5.0),
            ("Get ratio", run.get_ratio, WATCH_GET_RATIO, 0.05),
        ):
            cells = ["█"] * min(40, round(value / scale))
            mark = round(target / scale)
            cells += [" "] * (mark + 1 - len(cells))
            cells[mark] = "|"
            lines.append(f"{run.database:10} {label:10} {''.join(cells)} {value:.2f}")
    lines += [
        "```",
        "",
        "(p99: each `█` is 5 ms; ratio: each `█` is 0.05; `|` marks the target)",
        "",
    ]
    return "\n".join(lines)


PG_SETTINGS = (
    "autovacuum",
    "autovacuum_naptime",
    "autovacuum_vacuum_scale_factor",
    "synchronous_commit",
    "shared_buffers",
    "max_connections",
)


@contextmanager
def autovacuum_on() -> Iterator[dict[str, str]]:
    """PostgreSQL with autovacuum on for the minutes of the mixed load (it is off on these
    machines, and every update then leaves a dead row behind for good); the setting is
    put back afterwards. Yields the settings the load runs with."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        was, where = admin.execute(  # type: ignore[misc]
            "SELECT setting, coalesce(sourcefile, '') FROM pg_settings WHERE name = 'autovacuum'"
        ).fetchone()
        if was != "on":
            admin.execute("ALTER SYSTEM SET autovacuum = on")
            admin.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)
        shown = {
            name: str(admin.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in PG_SETTINGS
        }
    print(f"[postgresql] mixed load with {shown}", flush=True)
    try:
        yield shown
    finally:
        if was != "on":
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                # As it was: set by ALTER SYSTEM before, or from the configuration file.
                if where.endswith("postgresql.auto.conf"):
                    admin.execute(f"ALTER SYSTEM SET autovacuum = {was}")
                else:
                    admin.execute("ALTER SYSTEM RESET autovacuum")
                admin.execute("SELECT pg_reload_conf()")


def mixed_load(database: str, workdir: Path, args: argparse.Namespace) -> bench_load.LoadRun:
    """The mixed load on a database of its own, against a server of its own."""
    settings = {
        "watchers": args.load_watchers,
        "minutes": args.load_minutes,
        "max_seconds": args.load_max_seconds,
        "share": args.load_share,
    }
    if database == "sqlite":
        url = f"sqlite:///{workdir / 'load.db'}"
        run = bench_load.load_run(database, url, workdir, server, **settings)
    else:
        with autovacuum_on() as shown, postgres_database() as url:
            run = bench_load.load_run(database, url, workdir, server, **settings)
            run.settings = shown
    print(
        f"[{database}] mixed load: max {run.max_rps:.0f}/s, steady {run.achieved_rps:.0f}/s,"
        f" {run.error_count} errors, p99 later/earlier half {run.p99_growth:.2f},"
        f" RSS slope {run.rss_slope:+.2f} MB/min,"
        f" every watcher {run.delivered_least}/{run.acknowledged_writes} writes",
        flush=True,
    )
    return run


@contextmanager
def fresh_database(database: str, workdir: Path, label: str) -> Iterator[str]:
    """A database of its own for a phase: an SQLite file, or a PostgreSQL database."""
    if database == "sqlite":
        yield f"sqlite:///{workdir / f'{label}.db'}"
    else:
        with postgres_database() as url:
            yield url


def load_file(url: str, path: Path) -> None:
    """Loads TMF JSON lines with `customer-management import` (its progress bar shows)."""
    command = Path(sys.executable).with_name("customer-management")
    subprocess.run(
        [str(command), "import", str(path), "--database-url", url, "--log-level", "WARNING"],
        check=True,
    )


def reads_phase(database: str, workdir: Path, args: argparse.Namespace) -> bench_reads.ReadRun:
    with fresh_database(database, workdir, "reads") as url:
        return bench_reads.read_run(
            database,
            url,
            workdir,
            server,
            load_file,
            rows=args.reads_rows,
            rounds=args.rounds,
            requests=args.reads_requests,
        )


def history_phase(
    database: str, workdir: Path, args: argparse.Namespace
) -> bench_history.HistoryRun:
    with fresh_database(database, workdir, "history") as url:
        return bench_history.history_run(
            database,
            url,
            workdir,
            server,
            load_file,
            rounds=args.history_rounds,
            requests=args.history_requests,
        )


def relay_phase(database: str, workdir: Path, args: argparse.Namespace) -> bench_relay.RelayRun:
    return bench_relay.relay_run(
        database,
        lambda label: fresh_database(database, workdir, label),
        workdir,
        server,
        nats_url=args.nats_url,
        rounds=args.relay_rounds,
        seconds=args.relay_seconds,
        rate=args.relay_rate,
    )


def overload_phase(
    database: str, workdir: Path, args: argparse.Namespace
) -> bench_overload.OverloadRun:
    with fresh_database(database, workdir, "overload") as url:
        return bench_overload.overload_run(
            database, url, workdir, server, seconds=args.overload_seconds
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="customer-management-bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams per connection")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--watchers", type=int, default=500, help="open WatchEvents streams")
    parser.add_argument("--watch-writes", type=int, default=200, help="writes they receive")
    parser.add_argument("--watch-rate", type=float, default=20.0, help="those writes per second")
    parser.add_argument(
        "--scale-rows",
        default="10000,1000000",
        help="customers (and as many accounts) for the query phase, comma-separated; '' skips",
    )
    parser.add_argument("--scale-samples", type=int, default=300, help="requests per query")
    parser.add_argument(
        "--load-minutes", type=float, default=10.0, help="mixed load at the steady rate; 0 skips"
    )
    parser.add_argument("--load-watchers", type=int, default=100, help="watchers during it")
    parser.add_argument(
        "--load-max-seconds", type=float, default=30.0, help="flat out first, to find the maximum"
    )
    parser.add_argument("--load-share", type=float, default=0.8, help="of the maximum, steady")
    parser.add_argument(
        "--tracing-rounds", type=int, default=3, help="rounds of the tracing phase; 0 skips it"
    )
    parser.add_argument(
        "--reads-rows",
        type=int,
        default=100_000,
        help="customers for the reads phase (Gets at three hit ratios, updates); 0 skips it",
    )
    parser.add_argument("--reads-requests", type=int, default=50_000, help="per load there")
    parser.add_argument(
        "--history-rounds", type=int, default=5, help="rounds of the history phase; 0 skips it"
    )
    parser.add_argument(
        "--history-requests", type=int, default=10_000, help="creates per load there"
    )
    parser.add_argument(
        "--overload-seconds", type=float, default=10.0, help="of the flood; 0 skips the phase"
    )
    parser.add_argument(
        "--relay-rounds", type=int, default=3, help="rounds of the relay phase; 0 skips it"
    )
    parser.add_argument("--relay-seconds", type=float, default=15.0, help="per load there")
    parser.add_argument(
        "--relay-rate", type=float, default=200.0, help="writes/s while delays are measured"
    )
    parser.add_argument(
        "--nats-url", default=os.environ.get("CM_BENCH_NATS_URL", "nats://127.0.0.1:4222")
    )
    parser.add_argument("--output", default="BENCHMARKS.md")
    args = parser.parse_args(argv)
    binary = ensure_h2load()
    runs: list[Run] = []
    watching: list[WatchRun] = []
    loaded: list[bench_load.LoadRun] = []
    reads: list[bench_reads.ReadRun] = []
    overloads: list[bench_overload.OverloadRun] = []
    histories: list[bench_history.HistoryRun] = []
    relayed: list[bench_relay.RelayRun] = []
    with tempfile.TemporaryDirectory(prefix="cm-bench-") as tmp:
        workdir = Path(tmp)
        for database in filter(None, args.databases.split(",")):
            if database == "sqlite":
                url = f"sqlite:///{workdir / 'bench.db'}"
                found, watched = bench_database("sqlite", url, binary, args, workdir)
            else:
                with postgres_database() as url:
                    found, watched = bench_database("postgresql", url, binary, args, workdir)
            runs += found
            watching += [watched] if watched else []
            if args.reads_rows > 0:
                reads.append(reads_phase(database, workdir, args))
            if args.history_rounds > 0:
                histories.append(history_phase(database, workdir, args))
            if args.relay_rounds > 0:
                relayed.append(relay_phase(database, workdir, args))
            if args.overload_seconds > 0:
                overloads.append(overload_phase(database, workdir, args))
            if args.load_minutes > 0:
                loaded.append(mixed_load(database, workdir, args))
        traced = None
        if args.tracing_rounds > 0:
            traced = bench_tracing.tracing_run(
                workdir,
                server,
                lambda target, method, body: h2load(binary, target, method, body, args),
                args.tracing_rounds,
            )
        scaled: list[bench_scale.ScaleRun] = []
        for size in filter(None, args.scale_rows.split(",")):
            with postgres_database() as url:
                scaled.append(
                    bench_scale.scale_run(url, workdir, int(size), args.scale_samples, server)
                )
    rows = summarise(runs)
    command = "make bench" + (f" BENCH_ARGS='{' '.join(argv)}'" if argv else "")
    text = (
        report(rows, args, command)
        + watch_report(watching)
        + bench_reads.report(reads)
        + bench_history.report(histories)
        + bench_relay.report(relayed)
        + bench_overload.report(overloads)
        + bench_load.report(loaded)
        + bench_tracing.report(traced, args)
        + bench_scale.report(scaled)
    )
    Path(args.output).write_text(text)
    print(text)
    met = (
        all(row["met"] for row in rows)
        and all(watch_met(run) for run in watching)
        and all(bench_reads.met(run) for run in reads)
        and all(bench_history.met(run) for run in histories)
        and all(bench_relay.met(run) for run in relayed)
        and all(bench_overload.met(run) for run in overloads)
        and all(bench_load.met(run) for run in loaded)
        and (traced is None or bench_tracing.met(traced))
        and all(bench_scale.met(run) for run in scaled)
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
