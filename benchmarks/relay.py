"""`make bench`, relay phase: the NATS relay (`--publish-nats`) under CreateCustomer load.

- Throughput: two servers, relay on and relay off, each on a database of its own (a
  relay follows its database's whole outbox), driven flat out with CreateCustomer in
  interleaved rounds (each round in the other order). The target: relay on keeps at
  least 90% of relay off's throughput. While the relay-on server is loaded, the phase
  samples every 0.25 s how many events are committed (the outbox) and how many are in
  the JetStream stream: the relay keeps up when the stream holds at least 95% of the
  events committed during the load and its lag does not grow (the second half's
  largest lag at most 1.5 times the first half's, plus 100).
- End-to-end delay: CreateCustomer at a steady rate (`--relay-rate`, 200/s by default)
  while 1, then 20, JetStream consumers (ordered push consumers, in a process of their
  own) take every event; the delay is the consumer's receipt time minus the event's
  `time` (when the change was made, before its commit). Target: p99 ≤ 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import nats
from google.protobuf import json_format
from sqlalchemy import create_engine, text

from benchmarks import grpcload
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer

TARGET = 0.9
KEEP_UP = 0.95
DELAY_TARGET_MS = 100.0
SERVICE = "tmf629.v1.CustomerManagementService/"
Serve = Callable[..., AbstractContextManager[tuple[str, Any]]]
Fresh = Callable[[str], AbstractContextManager[str]]


@dataclass
class Lag:
    """One load of the relay-on server, sampled."""

    created: int
    relayed: int
    seconds: float
    samples: list[tuple[float, int]]
    """(seconds into the load, committed events not yet in the stream)."""

    @property
    def halves(self) -> tuple[int, int]:
        middle = self.seconds / 2
        first = [lag for t, lag in self.samples if t < middle] or [0]
        second = [lag for t, lag in self.samples if t >= middle] or [0]
        return max(first), max(second)

    @property
    def flat(self) -> bool:
        first, second = self.halves
        return second <= 1.5 * first + 100

    @property
    def kept_up(self) -> bool:
        return self.relayed >= KEEP_UP * self.created and self.flat


@dataclass
class Delays:
    consumers: int
    rate: float
    milliseconds: list[float]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.milliseconds)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class RelayRun:
    database: str
    rounds: list[dict[str, float]] = field(default_factory=list)
    lags: list[Lag] = field(default_factory=list)
    delays: list[Delays] = field(default_factory=list)
    errors: int = 0

    def median(self, name: str) -> float:
        return float(statistics.median(r[name] for r in self.rounds))

    def ratio(self) -> float:
        return float(statistics.median(r["on"] / r["off"] for r in self.rounds))

    def relay_rps(self) -> float:
        return float(statistics.median(lag.relayed / lag.seconds for lag in self.lags))


def met(run: RelayRun) -> bool:
    return (
        run.errors == 0
        and run.ratio() >= TARGET
        and all(lag.kept_up for lag in run.lags)
        and all(d.percentile(99) <= DELAY_TARGET_MS for d in run.delays)
    )


def relay_run(
    name: str,
    fresh: Fresh,
    workdir: Path,
    serve: Serve,
    *,
    nats_url: str,
    rounds: int,
    seconds: float,
    rate: float,
) -> RelayRun:
    from benchmarks.run import CUSTOMER

    binary = grpcload.build(workdir)
    create = grpcload.write_bodies(
        workdir / "relay-create.bin",
        [pb.CreateCustomerRequest(customer=json_format.ParseDict(CUSTOMER, Customer()))],
    )
    stream = f"BENCH_{uuid.uuid4().hex[:10].upper()}"
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    relay = ("--publish-nats", nats_url, "--nats-stream", stream, "--nats-subject-prefix", prefix)
    run = RelayRun(name)
    try:
        with contextlib.ExitStack() as stack:
            on_url, off_url = (
                stack.enter_context(fresh("relay-on")),
                stack.enter_context(fresh("relay-off")),
            )
            targets = {
                "on": stack.enter_context(serve(on_url, workdir, *relay))[0],
                "off": stack.enter_context(serve(off_url, workdir))[0],
            }
            for r in range(rounds):
                measured: dict[str, float] = {}
                order = list(targets.items())
                for role, target in order if r % 2 == 0 else reversed(order):
                    sampler = _Sampler(on_url, nats_url, stream) if role == "on" else None
                    with sampler or contextlib.nullcontext():
                        done = grpcload.run(
                            binary,
                            target,
                            SERVICE + "CreateCustomer",
                            create,
                            requests=10_000_000,
                            seconds=seconds,
                        )
                    measured[role] = done.rps
                    run.errors += done.requests - done.ok
                    if sampler is not None:
                        run.lags.append(sampler.result(done.ok, done.seconds))
                run.rounds.append(measured)
                lag = run.lags[-1]
                print(
                    f"[{name}] relay round {r + 1}/{rounds}: on {measured['on']:.0f}/s"
                    f" off {measured['off']:.0f}/s, relayed {lag.relayed}/{lag.created}"
                    f" lag max {max(lag.halves)}",
                    flush=True,
                )
            for consumers in (1, 20):
                delays = _delays(targets["on"], nats_url, stream, prefix, consumers, rate, seconds)
                run.delays.append(delays)
                print(
                    f"[{name}] relay delay, {consumers} consumers at {rate:.0f}/s:"
                    f" p50 {delays.percentile(50):.1f} ms p99 {delays.percentile(99):.1f} ms",
                    flush=True,
                )
    finally:
        asyncio.run(_delete_stream(nats_url, stream))
    return run


class _Sampler:
    """Samples, every 0.25 s in a thread, the committed events and the stream's."""

    def __init__(self, database_url: str, nats_url: str, stream: str) -> None:
        self.database_url = database_url
        self.nats_url = nats_url
        self.stream = stream
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()))

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    async def _sample(self) -> None:
        engine = create_engine(self.database_url)
        connection = await nats.connect(self.nats_url)
        stream = connection.jetstream()
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                with engine.connect() as db:
                    committed = int(db.execute(text("SELECT max(seq) FROM event")).scalar() or 0)
                relayed = (await stream.stream_info(self.stream)).state.last_seq
                self.samples.append((time.monotonic() - started, committed, relayed))
                await asyncio.sleep(0.25)
        finally:
            await connection.close()
            engine.dispose()

    def result(self, created: int, seconds: float) -> Lag:
        first, last = self.samples[0], self.samples[-1]
        return Lag(
            created=last[1] - first[1],
            relayed=last[2] - first[2],
            seconds=last[0] - first[0] or seconds,
            samples=[(t, max(0, committed - relayed)) for t, committed, relayed in self.samples],
        )


def _delays(
    target: str,
    nats_url: str,
    stream: str,
    prefix: str,
    consumers: int,
    rate: float,
    seconds: float,
) -> Delays:
    """Writes at `rate` for `seconds` while `consumers` take every event."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    ready = context.Event()
    process = context.Process(
        target=_consume, args=(nats_url, stream, prefix, consumers, ready, results)
    )
    process.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the relay bench's consumers did not start")
        count = _write_at(target, rate, seconds)
        milliseconds: list[float] = results.get(timeout=60 + seconds)
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    if len(milliseconds) < consumers * count:
        raise SystemExit(f"consumers got {len(milliseconds)} of {consumers * count} events")
    return Delays(consumers, rate, milliseconds)


def _write_at(target: str, rate: float, seconds: float) -> int:
    """CreateCustomer calls at `rate` a second (paced, one at a time from a few tasks)."""

    async def write() -> int:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            total = int(rate * seconds)
            start = time.monotonic()

            async def one(i: int) -> None:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                await stub.CreateCustomer(
                    pb.CreateCustomerRequest(customer=Customer(name=f"r{i}")), timeout=10
                )

            pending: set[asyncio.Task[None]] = set()
            for i in range(total):
                pending.add(asyncio.create_task(one(i)))
                if len(pending) >= 64:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(*pending)
            return total

    return asyncio.run(write())


def _consume(
    nats_url: str, stream: str, prefix: str, consumers: int, ready: Any, results: Any
) -> None:
    """In a process of its own: `consumers` ordered consumers of new events; sends back
    every delay (ms) once the stream has been quiet for 3 s."""

    async def main() -> list[float]:
        connection = await nats.connect(nats_url)
        jetstream = connection.jetstream()
        delays: list[float] = []
        last = [time.monotonic()]

        async def received(message: Any) -> None:
            now = time.time()
            delays.append((now - _event_time(message.data)) * 1000)
            last[0] = time.monotonic()

        for _ in range(consumers):
            await jetstream.subscribe(
                f"{prefix}.>", stream=stream, cb=received, ordered_consumer=True,
                deliver_policy=nats.js.api.DeliverPolicy.NEW,
            )  # fmt: skip
        ready.set()
        while not delays or time.monotonic() - last[0] < 3:  # noqa: ASYNC110 (callbacks)
            await asyncio.sleep(0.2)
        await connection.close()
        return delays

    results.put(asyncio.run(main()))


def _event_time(envelope: bytes) -> float:
    """The envelope's `time`, found without parsing the whole body: 20 consumers parsing
    every event would measure the consumers' process more than the relay."""
    start = envelope.index(b'"time": "') + 9
    stamp = envelope[start : envelope.index(b'"', start)].decode()
    return datetime.fromisoformat(stamp).timestamp()


async def _delete_stream(nats_url: str, stream: str) -> None:
    with contextlib.suppress(Exception):
        connection = await nats.connect(nats_url)
        try:
            await connection.jetstream().delete_stream(stream)
        finally:
            await connection.close()


def report(runs: list[RelayRun]) -> str:
    if not runs:
        return ""
    lines = [
        "",
        "## The NATS relay: throughput, lag and end-to-end delay",
        "",
        "Relay on (`--publish-nats`, JSON mode) and relay off, each server on a database of its"
        " own, CreateCustomer flat out in interleaved rounds (benchmarks/grpcload.c, 4"
        " connections of 16 streams); the outbox and the JetStream stream sampled every 0.25 s"
        " during the relay-on loads. Targets: relay on keeps at least"
        f" {TARGET:.0%} of relay off's throughput; the stream gets at least {KEEP_UP:.0%} of"
        " the events committed during the load, with the lag flat (second half's largest at"
        " most 1.5 x the first half's + 100).",
        "",
        "| database | relay on req/s | relay off req/s | on / off | target | relayed events/s"
        " | lag max, 1st half / 2nd half | kept up | met |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for run in runs:
        ratio = run.ratio()
        halves = [lag.halves for lag in run.lags]
        kept = all(lag.kept_up for lag in run.lags)
        lines.append(
            f"| {run.database} | {run.median('on'):.0f} | {run.median('off'):.0f}"
            f" | {ratio:.2f} | ≥ {TARGET} | {run.relay_rps():.0f}"
            f" | {', '.join(f'{a} / {b}' for a, b in halves)}"
            f" | {'yes' if kept else '**no**'}"
            f" | {'yes' if ratio >= TARGET and kept else '**no**'} |"
        )
    lines += [
        "",
        "End-to-end delay, from the change (its event `time`, before the commit) to a JetStream"
        " consumer (ordered push consumers in a process of their own), CreateCustomer at a"
        f" steady rate. Target: p99 ≤ {DELAY_TARGET_MS:.0f} ms.",
        "",
        "| database | consumers | writes/s | deliveries | p50 ms | p99 ms | max ms | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        for d in run.delays:
            p99 = d.percentile(99)
            lines.append(
                f"| {run.database} | {d.consumers} | {d.rate:.0f} | {len(d.milliseconds)}"
                f" | {d.percentile(50):.1f} | {p99:.1f} | {max(d.milliseconds):.1f}"
                f" | {'yes' if p99 <= DELAY_TARGET_MS else '**no**'} |"
            )
    bars = [
        (f"{run.database} relay {role}", run.median(role)) for run in runs for role in ("on", "off")
    ]
    bars += [(f"{run.database} relayed", run.relay_rps()) for run in runs]
    top = max(rps for _, rps in bars)
    lines += [
        "",
        "```",
        *(f"{label:22} {'█' * round(rps / top * 40)} {rps:.0f}/s" for label, rps in bars),
        "```",
        f"(errors: {sum(run.errors for run in runs)})",
        "",
    ]
    return "\n".join(lines)
