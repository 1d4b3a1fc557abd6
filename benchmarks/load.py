"""`make bench`, mixed load: 70% GetCustomer, 20% UpdateCustomer, 10% CreateCustomer,
with WatchEvents streams open, first flat out, then for minutes at a share of that.

Client processes send the mix over grpc.aio: closed-loop (a fixed number of calls in
flight) to find the maximum throughput, then open-loop at `share` of it, each call at
its scheduled time, its latency counted from then (so a stalled server cannot hide its
queue). A separate process holds the watchers and counts what each receives; every
acknowledged write must reach every watcher. Each minute's calls, errors and latency
percentiles and the server's memory (sampled every few seconds, with its slope) make
the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import statistics
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from tqdm import tqdm

from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import WatchEventsRequest

MIX = (("get", 0.7), ("update", 0.2), ("create", 0.1))
SERVICE = "/tmf629.v1.CustomerManagementService/"
CLIENTS = 2
"""Client processes (one per core here); each keeps its own connection."""
IN_FLIGHT = 32
"""Calls each client keeps in flight while finding the maximum."""
MAX_OPEN = 2000
"""Calls a client lets be outstanding at the steady rate before it counts one as lost."""
POOL = 1000
"""Customers created first: reads and updates pick among them."""
DEADLINE = 10.0
P99_GROWTH_TARGET = 1.5
"""The later half's p99 at most this much of the earlier half's: each half's p99 is the
median of its minutes' p99s, so that a single bad minute (a checkpoint, a noisy
neighbour) cannot decide it, but a trend does."""
RSS_SLOPE_TARGET = 1.0
"""MB per minute the server may grow by, after the first minute."""
RSS_EVERY = 5.0

Serve = Callable[[str, Path], AbstractContextManager[tuple[str, Any]]]


@dataclass(frozen=True)
class Minute:
    index: int
    calls: int
    errors: int
    p50_ms: float
    p99_ms: float


@dataclass
class LoadRun:
    database: str
    watchers: int
    max_rps: float
    target_rps: float
    seconds: float
    minutes: list[Minute] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    acknowledged_writes: int = 0
    delivered_least: int = 0
    """The fewest events any one watcher received (each should get every write)."""
    rss: list[tuple[float, float]] = field(default_factory=list)
    """(minutes since the steady load began, server RSS in MB)."""
    settings: dict[str, str] = field(default_factory=dict)
    """The database's settings it ran with (PostgreSQL)."""

    @property
    def calls(self) -> int:
        return sum(m.calls for m in self.minutes)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def achieved_rps(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def p99_growth(self) -> float:
        """The later half's p99 over the earlier half's (see P99_GROWTH_TARGET)."""
        whole = [m.p99_ms for m in self.minutes if m.calls]
        if len(whole) < 2:
            return 1.0
        half = len(whole) // 2
        return statistics.median(whole[-half:]) / statistics.median(whole[:half])

    @property
    def p99_last_to_first(self) -> float:
        whole = [m for m in self.minutes if m.calls]
        return whole[-1].p99_ms / whole[0].p99_ms if len(whole) > 1 else 1.0

    @property
    def rss_slope(self) -> float:
        """MB per minute, fitted after the first minute (warm-up)."""
        settled = [(t, mb) for t, mb in self.rss if t >= 1.0] or self.rss
        if len(settled) < 2:
            return 0.0
        slope, _ = statistics.linear_regression([t for t, _ in settled], [m for _, m in settled])
        return slope

    @property
    def complete(self) -> bool:
        return self.delivered_least >= self.acknowledged_writes


def met(run: LoadRun) -> bool:
    return (
        run.error_count == 0
        and run.complete
        and run.p99_growth <= P99_GROWTH_TARGET
        and run.rss_slope <= RSS_SLOPE_TARGET
    )


# -- the client processes -----------------------------------------------------------


def _client_process(target: str, ids: list[str], seed: int, conn: Connection) -> None:
    asyncio.run(_client(target, ids, seed, conn))


async def _client(target: str, ids: list[str], seed: int, conn: Connection) -> None:
    """Runs what the parent asks: ("max", seconds) or ("steady", rate, seconds)."""
    rng = random.Random(seed)
    customer = json_format.ParseDict({"name": "Load", "status": "Active"}, Customer())
    create = pb.CreateCustomerRequest(customer=customer).SerializeToString()
    gets = [pb.GetCustomerRequest(id=id).SerializeToString() for id in ids]
    kinds = [kind for kind, share in MIX for _ in range(round(share * 100))]
    counter = 0

    def request() -> tuple[str, bytes]:
        nonlocal counter
        kind = rng.choice(kinds)
        if kind == "get":
            return "GetCustomer", rng.choice(gets)
        if kind == "create":
            return "CreateCustomer", create
        counter += 1
        change = Customer(id=rng.choice(ids), description=f"{seed}-{counter}")
        return "UpdateCustomer", pb.UpdateCustomerRequest(customer=change).SerializeToString()

    async with grpc.aio.insecure_channel(target) as channel:
        methods = {
            name: channel.unary_unary(SERVICE + name, None, None)
            for name in ("GetCustomer", "UpdateCustomer", "CreateCustomer")
        }

        async def call(name: str, body: bytes) -> str:
            """'' on success, else the status code's name."""
            try:
                await methods[name](body, timeout=DEADLINE)
                return ""
            except grpc.aio.AioRpcError as error:
                return error.code().name

        while True:
            order = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            if order[0] == "stop":
                return
            if order[0] == "max":
                conn.send(await _flat_out(call, request, order[1]))
            else:
                conn.send(await _steady(call, request, order[1], order[2], conn))


async def _flat_out(
    call: Callable[[str, bytes], Any], request: Callable[[], tuple[str, bytes]], seconds: float
) -> tuple[int, int, int]:
    """Closed loop: (calls answered OK, errors, writes acknowledged)."""
    done = errors = writes = 0
    end = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal done, errors, writes
        while time.monotonic() < end:
            name, body = request()
            if await call(name, body):
                errors += 1
            else:
                done += 1
                writes += name != "GetCustomer"

    await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))
    return done, errors, writes


async def _steady(
    call: Callable[[str, bytes], Any],
    request: Callable[[], tuple[str, bytes]],
    rate: float,
    seconds: float,
    conn: Connection,
) -> tuple[list[array[float]], list[int], dict[str, int], int]:
    """Open loop: per minute, the latencies (ms) of the calls answered OK and the count
    of errors; errors by code; writes acknowledged. Sends (calls, errors) every second
    for the progress bar."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    minutes: list[array[float]] = [array("d") for _ in range(int(seconds // 60) + 1)]
    failed = [0] * len(minutes)
    errors: dict[str, int] = {}
    writes = 0
    open_calls: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    reported = 0

    async def one(name: str, body: bytes, due: float) -> None:
        nonlocal writes
        code = await call(name, body)
        if code:
            errors[code] = errors.get(code, 0) + 1
            failed[int((due - started) // 60)] += 1
        else:
            minutes[int((due - started) // 60)].append((loop.time() - due) * 1000)
            writes += name != "GetCustomer"

    for i in range(total):
        due = started + i / rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        if len(open_calls) >= MAX_OPEN:
            errors["CLIENT_BACKLOG"] = errors.get("CLIENT_BACKLOG", 0) + 1
            failed[int((due - started) // 60)] += 1
            continue
        task = asyncio.create_task(one(*request(), due))
        open_calls.add(task)
        task.add_done_callback(open_calls.discard)
        if int(loop.time() - started) > reported:
            reported = int(loop.time() - started)
            conn.send(("progress", i, sum(errors.values())))
    await asyncio.gather(*open_calls)
    return minutes, failed, errors, writes


# -- the watchers' process ----------------------------------------------------------


def _watchers_process(target: str, count: int, conn: Connection) -> None:
    asyncio.run(_watchers(target, count, conn))


async def _watchers(target: str, count: int, conn: Connection) -> None:
    """Holds `count` streams; sends "ready" once each has had an event, then, on
    "count", the number of events each has received since."""
    seen = [0] * count
    opened = asyncio.Event()
    channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, count // 50))]
    ended: list[str] = []

    async def one(i: int) -> None:
        stub = channels[i % len(channels)].unary_stream(SERVICE + "WatchEvents", None, None)
        try:
            async for _ in stub(WatchEventsRequest().SerializeToString()):
                seen[i] += 1
                if all(seen):
                    opened.set()
        except grpc.aio.AioRpcError as error:
            ended.append(error.code().name)

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await opened.wait()
    start = list(seen)
    conn.send("ready")
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, conn.recv)) == "count":
        conn.send(([n - s for n, s in zip(seen, start, strict=True)], list(ended)))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close(None)


# -- the run ------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def _processes(
    target: str, ids: list[str], watchers: int
) -> Iterator[tuple[list[Connection], Connection]]:
    context = multiprocessing.get_context("spawn")
    started: list[Any] = []
    clients: list[Connection] = []
    for i in range(CLIENTS):
        parent, child = context.Pipe()
        process = context.Process(target=_client_process, args=(target, ids, i, child))
        process.start()
        started.append(process)
        clients.append(parent)
    parent, child = context.Pipe()
    watching = context.Process(target=_watchers_process, args=(target, watchers, child))
    watching.start()
    started.append(watching)
    try:
        yield clients, parent
    finally:
        for pipe in [*clients, parent]:
            with contextlib.suppress(OSError):
                pipe.send("stop" if pipe is parent else ("stop",))
        for process in started:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def load_run(
    name: str,
    url: str,
    workdir: Path,
    serve: Serve,
    *,
    watchers: int,
    minutes: float,
    max_seconds: float,
    share: float,
    quiet: bool = False,
) -> LoadRun:
    with serve(url, workdir) as (target, process):
        ids = _create_pool(target)
        with _processes(target, ids, watchers) as (clients, watching):
            _warm_up(target, watching)
            for pipe in clients:
                pipe.send(("max", max_seconds))
            answers = [pipe.recv() for pipe in clients]
            done = sum(a[0] for a in answers)
            run = LoadRun(name, watchers, done / max_seconds, share * done / max_seconds, 0.0)
            run.acknowledged_writes = sum(a[2] for a in answers)
            for answer in answers:
                if answer[1]:
                    run.errors["while finding the maximum"] = answer[1]
            _steady_phase(run, clients, process.pid, minutes, quiet)
            run.delivered_least = _delivered(run, watching)
    return run


def _create_pool(target: str) -> list[str]:
    with grpc.insecure_channel(target) as channel:
        create = channel.unary_unary(SERVICE + "CreateCustomer", None, Customer.FromString)
        return [
            create(
                pb.CreateCustomerRequest(customer=Customer(name=f"pool {i}")).SerializeToString(),
                timeout=DEADLINE,
            ).id
            for i in range(POOL)
        ]


def _warm_up(target: str, watching: Connection) -> None:
    """Writes until every watcher has had one: then every stream is live. The watchers
    count from there, so these writes are not expected of them."""
    with grpc.insecure_channel(target) as channel:
        create = channel.unary_unary(SERVICE + "CreateCustomer", None, None)
        body = pb.CreateCustomerRequest(customer=Customer(name="warm-up")).SerializeToString()
        while True:
            create(body, timeout=DEADLINE)
            if watching.poll(0.5):
                watching.recv()
                return


def _steady_phase(
    run: LoadRun, clients: list[Connection], pid: int, minutes: float, quiet: bool
) -> None:
    seconds = minutes * 60
    for pipe in clients:
        pipe.send(("steady", run.target_rps / len(clients), seconds))
    started = time.monotonic()
    next_sample = started
    results: dict[int, Any] = {}
    progress: dict[int, tuple[int, int]] = {}
    with tqdm(
        total=round(seconds),
        unit="s",
        desc=f"[{run.database}] mixed load at {run.target_rps:.0f}/s",
        disable=quiet,
        mininterval=1.0,
    ) as bar:
        while len(results) < len(clients):
            now = time.monotonic()
            if now >= next_sample:
                run.rss.append(((now - started) / 60, rss_mb(pid)))
                next_sample += RSS_EVERY
            for i, pipe in enumerate(clients):
                while i not in results and pipe.poll(0):
                    message = pipe.recv()
                    if isinstance(message, tuple) and message[0] == "progress":
                        progress[i] = message[1:]
                    else:
                        results[i] = message
            bar.set_postfix(
                calls=sum(p[0] for p in progress.values()),
                errors=sum(p[1] for p in progress.values()),
                rss_mb=f"{run.rss[-1][1]:.0f}",
                refresh=False,
            )
            bar.update(min(round(seconds), round(now - started)) - bar.n)  # redraws at most 1/s
            time.sleep(0.2)
    run.seconds = seconds
    count = max(len(r[0]) for r in results.values())
    for m in range(count):
        latencies = sorted(x for r in results.values() if m < len(r[0]) for x in r[0][m])
        errors = sum(r[1][m] for r in results.values() if m < len(r[1]))
        if not latencies:
            continue
        run.minutes.append(
            Minute(
                m + 1,
                len(latencies),
                errors,
                latencies[len(latencies) // 2],
                latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            )
        )
    for result in results.values():
        for code, n in result[2].items():
            run.errors[code] = run.errors.get(code, 0) + n
        run.acknowledged_writes += result[3]


def _delivered(run: LoadRun, watching: Connection) -> int:
    """Waits (up to 60 s) for every watcher to have every acknowledged write."""
    deadline = time.monotonic() + 60
    while True:
        watching.send("count")
        counts, ended = watching.recv()
        if ended:
            run.errors["watcher ended"] = len(ended)
        least = min(counts) if counts else 0
        if least >= run.acknowledged_writes or time.monotonic() > deadline:
            return int(least)
        time.sleep(0.5)


# -- the report ---------------------------------------------------------------------


def report(runs: list[LoadRun]) -> str:
    if not runs:
        return ""
    first = runs[0]
    lines = [
        "",
        "## Mixed load",
        "",
        f"{', '.join(f'{share:.0%} {kind}' for kind, share in MIX)} (GetCustomer,"
        f" UpdateCustomer, CreateCustomer) from {CLIENTS} client processes over grpc.aio, with"
        f" {first.watchers} WatchEvents streams open. First closed-loop ({IN_FLIGHT} calls in"
        " flight per client) to find the maximum, then open-loop at"
        f" {first.target_rps / first.max_rps:.0%} of it for {first.seconds / 60:g} minutes;"
        " latency counts from each call's scheduled time. Targets: no errors, every"
        " acknowledged write at every watcher, p99 flat: the median of the per-minute p99s"
        f" of the later half ≤ {P99_GROWTH_TARGET:g}x that of the earlier half (one bad minute"
        " cannot decide it; a trend does), server memory growing ≤"
        f" {RSS_SLOPE_TARGET:g} MB/min (least squares after the first minute).",
        "",
        "| database | max calls/s | target calls/s | achieved | calls | errors |"
        " writes to every watcher | p99 later / earlier half | p99 last / first minute |"
        " RSS MB start → end |"
        " RSS slope MB/min | met |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        errors = ", ".join(f"{n} {code}" for code, n in run.errors.items()) or "0"
        lines.append(
            f"| {run.database} | {run.max_rps:.0f} | {run.target_rps:.0f} |"
            f" {run.achieved_rps:.0f} | {run.calls:,} | {errors} |"
            f" {run.delivered_least:,}/{run.acknowledged_writes:,} |"
            f" {run.p99_growth:.2f} | {run.p99_last_to_first:.2f} |"
            f" {run.rss[0][1]:.0f} → {run.rss[-1][1]:.0f} |"
            f" {run.rss_slope:+.2f} | {'yes' if met(run) else '**no**'} |"
        )
    for run in runs:
        if run.settings:
            shown = ", ".join(f"{name} = {value}" for name, value in run.settings.items())
            lines += ["", f"{run.database} ran with {shown}."]
    for run in runs:
        lines += [
            "",
            f"{run.database}, by minute (p99: each `█` is 5 ms):",
            "",
            "| minute | calls | errors | p50 ms | p99 ms | p99 |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for m in run.minutes:
            bar = "█" * min(60, max(1, round(m.p99_ms / 5)))
            lines.append(
                f"| {m.index} | {m.calls:,} | {m.errors} | {m.p50_ms:.1f} | {m.p99_ms:.1f} |"
                f" `{bar}` |"
            )
        lines += ["", f"{run.database}, server RSS (each `█` is 2 MB above the lowest):", "", "```"]
        low = min(mb for _, mb in run.rss)
        step = max(1, len(run.rss) // 20)
        for t, mb in run.rss[::step]:
            lines.append(f"{t:5.1f} min {mb:6.1f} MB {'█' * round((mb - low) / 2)}")
        lines += ["```"]
    lines.append("")
    return "\n".join(lines)
