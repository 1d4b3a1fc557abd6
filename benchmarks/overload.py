"""`make bench`, overload phase: CreateCustomer flooded far past capacity.

On a server of its own: the capacity, as CreateCustomer calls per second with 32 in
flight; then a flood of 1,500 calls kept in flight, each with a 2 s deadline, for 10 s.
Meanwhile a prober asks Health/Check every 50 ms; once the flood has ended it asks
GetCustomer every 20 ms for two seconds. Then every create the flood saw acknowledged is
read back from the database. The targets (issue 16): goodput at least 0.7 of capacity,
at least 90% of the failed calls answered RESOURCE_EXHAUSTED or UNAVAILABLE within
100 ms, the successful calls' p99 at most 1 s, Check's p99 under 1 s during the flood,
Gets under 200 ms from a second after the flood, and every acknowledged create there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks import grpcload
from benchmarks.grpcload import Load
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer

CREATE = "tmf629.v1.CustomerManagementService/CreateCustomer"
IN_FLIGHT = 1500
CONNECTIONS = 15
"""The flood's connections (a server takes 1,000 streams on one by default)."""
DEADLINE_MS = 2000
GOODPUT_TARGET = 0.7
FAST_FAILURES_TARGET = 0.9
OK_P99_TARGET_MS = 1000.0
CHECK_P99_TARGET_MS = 1000.0
GET_TARGET_MS = 200.0
RECOVERY_S = 1.0

Serve = Callable[..., AbstractContextManager[tuple[str, Any]]]


@dataclass
class OverloadRun:
    database: str
    seconds: float
    capacity: Load
    flood: Load
    check_ms: list[float] = field(default_factory=list)
    check_failures: int = 0
    gets_after: list[tuple[float, float]] = field(default_factory=list)
    """(seconds after the flood ended, latency ms; inf for a failed Get)."""
    acknowledged: int = 0
    readable: int = 0

    @property
    def goodput_ratio(self) -> float:
        return self.flood.ok_rps / self.capacity.ok_rps if self.capacity.ok_rps else 0.0

    @property
    def fast_failures(self) -> float:
        return self.flood.failed_within_100ms / self.flood.failed if self.flood.failed else 1.0

    @property
    def check_p99_ms(self) -> float:
        ordered = sorted(self.check_ms) or [float("inf")]
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    @property
    def recovered_after(self) -> float:
        """Seconds after the flood from which every Get answered within GET_TARGET_MS."""
        slow = [at for at, ms in self.gets_after if ms >= GET_TARGET_MS]
        return max(slow, default=0.0)


def met(run: OverloadRun) -> bool:
    return (
        run.goodput_ratio >= GOODPUT_TARGET
        and run.fast_failures >= FAST_FAILURES_TARGET
        and run.flood.ok_p99_ms <= OK_P99_TARGET_MS
        and run.check_p99_ms <= CHECK_P99_TARGET_MS
        and run.check_failures == 0
        and run.recovered_after <= RECOVERY_S
        and run.readable == run.acknowledged > 0
    )


def overload_run(
    name: str, url: str, workdir: Path, serve: Serve, *, seconds: float = 10.0
) -> OverloadRun:
    from benchmarks.run import CUSTOMER

    binary = grpcload.build(workdir)
    customer = json_format.ParseDict(CUSTOMER, Customer())
    body = grpcload.write_bodies(
        workdir / "overload-create.bin", [pb.CreateCustomerRequest(customer=customer)]
    )
    acknowledged = workdir / f"acknowledged-{name}.bin"
    with serve(url, workdir) as (target, _):
        print(f"[{name}] overload: capacity at 32 in flight …", flush=True)
        capacity = grpcload.run(
            binary, target, CREATE, body, connections=1, streams=32, requests=10**7,
            seconds=seconds,
        )  # fmt: skip
        with grpc.insecure_channel(target) as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            probe_id = stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer)).id
            print(
                f"[{name}] overload: capacity {capacity.ok_rps:.0f}/s; flooding with"
                f" {IN_FLIGHT} calls in flight for {seconds:g} s …",
                flush=True,
            )
            flooded: list[Load] = []
            flood = threading.Thread(
                target=lambda: flooded.append(
                    grpcload.run(
                        binary, target, CREATE, body, connections=CONNECTIONS,
                        streams=IN_FLIGHT // CONNECTIONS, requests=10**7,
                        timeout_ms=DEADLINE_MS, seconds=seconds, record=acknowledged,
                    )
                )
            )  # fmt: skip
            run = OverloadRun(name, seconds, capacity, capacity)
            health = health_pb2_grpc.HealthStub(channel)
            flood.start()
            while flood.is_alive():
                started = time.monotonic()
                try:
                    health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    run.check_ms.append((time.monotonic() - started) * 1000)
                except grpc.RpcError:
                    run.check_failures += 1
                time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))
            flood.join()
            ended = time.monotonic()
            if not flooded:
                raise SystemExit("the flood's load generator failed")
            run.flood = flooded[0]
            while (at := time.monotonic() - ended) < 2.0:
                started = time.monotonic()
                try:
                    stub.GetCustomer(pb.GetCustomerRequest(id=probe_id), timeout=2)
                    run.gets_after.append((at, (time.monotonic() - started) * 1000))
                except grpc.RpcError:
                    run.gets_after.append((at, float("inf")))
                time.sleep(max(0.0, 0.02 - (time.monotonic() - started)))
        ids = [Customer.FromString(data).id for data in grpcload.read_frames(acknowledged)]
        run.acknowledged = len(ids)
        run.readable = asyncio.run(_readable(target, ids))
    print(
        f"[{name}] overload: goodput {run.flood.ok_rps:.0f}/s ({run.goodput_ratio:.2f} of"
        f" capacity), failed {run.flood.failed} ({run.fast_failures:.0%} fast),"
        f" OK p99 {run.flood.ok_p99_ms:.0f} ms, Check p99 {run.check_p99_ms:.0f} ms,"
        f" Gets fine {run.recovered_after:.2f} s after,"
        f" readable {run.readable}/{run.acknowledged}",
        flush=True,
    )
    return run


async def _readable(target: str, ids: list[str]) -> int:
    """How many of `ids` the database holds (read past the cache)."""
    found = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
        limit = asyncio.Semaphore(32)

        async def one(id: str) -> None:
            nonlocal found
            async with limit:
                await stub.GetCustomer(
                    pb.GetCustomerRequest(id=id),
                    metadata=(("cache-control", "no-cache"),),
                    timeout=30,
                )
                found += 1

        results = await asyncio.gather(*(one(id) for id in ids), return_exceptions=True)
        assert all(r is None or isinstance(r, grpc.aio.AioRpcError) for r in results)
    return found


def report(runs: list[OverloadRun]) -> str:
    if not runs:
        return ""
    lines = [
        "",
        "## Overload",
        "",
        f"CreateCustomer: the capacity with 32 calls in flight for {runs[0].seconds:g} s, then"
        f" a flood of {IN_FLIGHT:,} calls kept in flight ({CONNECTIONS} connections), each"
        f" with a {DEADLINE_MS / 1000:g} s deadline, for {runs[0].seconds:g} s"
        " (benchmarks/grpcload.c). A prober asks Health/Check every 50 ms during the flood,"
        " then GetCustomer every 20 ms for 2 s after it. Every create the flood saw"
        " acknowledged is then read from the database.",
        "",
        "| database | capacity /s | goodput /s | goodput / capacity | failed | failed fast"
        " (< 100 ms, RESOURCE_EXHAUSTED or UNAVAILABLE) | OK p99 ms | Check p99 ms |"
        " Gets < 200 ms after | acknowledged read back | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.database} | {run.capacity.ok_rps:.0f} | {run.flood.ok_rps:.0f} |"
            f" {run.goodput_ratio:.2f} | {run.flood.failed:,} | {run.fast_failures:.0%} |"
            f" {run.flood.ok_p99_ms:.0f} | {run.check_p99_ms:.0f} | {run.recovered_after:.2f} s |"
            f" {run.readable:,}/{run.acknowledged:,} | {'yes' if met(run) else '**no**'} |"
        )
    lines += [
        "",
        f"Targets: goodput ≥ {GOODPUT_TARGET} of capacity; ≥ {FAST_FAILURES_TARGET:.0%} of"
        f" failures fast; OK p99 ≤ {OK_P99_TARGET_MS:.0f} ms; Check p99 ≤"
        f" {CHECK_P99_TARGET_MS:.0f} ms (and none failed); Gets under {GET_TARGET_MS:.0f} ms"
        f" from {RECOVERY_S:g} s after the flood; every acknowledged create read back."
        " Status codes of the flood: "
        + "; ".join(f"{run.database} {run.flood.statuses}" for run in runs)
        + ".",
        "",
        "```",
    ]
    for run in runs:
        cells = ["█"] * min(40, round(run.goodput_ratio / 0.05))
        mark = round(GOODPUT_TARGET / 0.05)
        cells += [" "] * (mark + 1 - len(cells))
        cells[mark] = "|"
        lines.append(f"{run.database:10} goodput    {''.join(cells)} {run.goodput_ratio:.2f}")
    lines += ["```", "", "(each `█` is 0.05 of capacity; `|` marks the target)", ""]
    return "\n".join(lines)
