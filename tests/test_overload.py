"""A short version of make bench's overload phase: CreateCustomer flooded far past what a
server process finishes. The excess is turned away at once (RESOURCE_EXHAUSTED with a
RetryInfo, or UNAVAILABLE), the admitted calls finish well within their deadlines, health
checks answer throughout, Gets answer quickly once the flood ends, and every acknowledged
create is stored."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from faults import ServerProcess, stub
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_pb2 import Customer

IN_FLIGHT = 200
DEADLINE = 2.0
FLOOD = 4.0
FAST = 0.5
"""Seconds within which a turned-away call is answered, a quarter of its deadline: long
before it. (make bench measures the bench's flood with a client in C; this Python client
adds its own queueing to what it measures.)"""


@dataclass
class Flood:
    ok: list[tuple[str, float]] = field(default_factory=list)
    """(id, seconds) of each acknowledged create."""
    failed: list[tuple[grpc.StatusCode, float]] = field(default_factory=list)
    retry_info: int = 0


async def test_a_flood_is_turned_away_early_and_nothing_acknowledged_is_lost(
    own_database: str, tmp_path: Path
) -> None:
    # A Python client cannot outrun a server process on a small machine: a target latency
    # of 20 ms makes the server's capacity the client's to exceed.
    server = ServerProcess(own_database, tmp_path / "server.log", "--overload-latency", "0.02")
    await server.start()
    try:
        channels = [grpc.aio.insecure_channel(server.address) for _ in range(3)]
        stubs = [stub(channel) for channel in channels]
        seen = Flood()
        end = time.monotonic() + FLOOD

        async def caller(i: int) -> None:
            service = stubs[i % len(stubs)]
            while time.monotonic() < end:
                request = pb.CreateCustomerRequest(customer=Customer(name=f"flood {i}"))
                started = time.monotonic()
                try:
                    made = await service.CreateCustomer(request, timeout=DEADLINE)
                    seen.ok.append((made.id, time.monotonic() - started))
                except grpc.aio.AioRpcError as error:
                    seen.failed.append((error.code(), time.monotonic() - started))
                    if _retry_info(error):
                        seen.retry_info += 1

        checks: list[float] = []

        async def prober() -> None:
            health = health_pb2_grpc.HealthStub(channels[0])
            while time.monotonic() < end:
                started = time.monotonic()
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                checks.append(time.monotonic() - started)
                await asyncio.sleep(0.05)

        await asyncio.gather(prober(), *(caller(i) for i in range(IN_FLIGHT)))

        # The flood is over: a Get answers quickly again.
        assert seen.ok, "nothing was admitted"
        get = pb.GetCustomerRequest(id=seen.ok[0][0])
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await stubs[0].GetCustomer(get, timeout=5)
        assert time.monotonic() - started < 0.5

        codes = {code for code, _ in seen.failed}
        assert seen.failed, "the flood was not past capacity"
        assert codes <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}, codes
        fast = sum(took < FAST for _, took in seen.failed)
        assert fast >= 0.9 * len(seen.failed), f"{fast} of {len(seen.failed)} turned away fast"
        assert seen.retry_info >= 0.9 * len(seen.failed)
        assert max(took for _, took in seen.ok) < DEADLINE
        assert max(checks) < 1.0, f"a health check took {max(checks):.2f} s"

        # Every acknowledged create is in the database (read past the cache).
        fresh = (("cache-control", "no-cache"),)
        limit = asyncio.Semaphore(32)

        async def stored(id: str) -> str:
            # The server still holds reads to its 20 ms target: a read it turns away is
            # retried after the delay its RetryInfo names, as a client is asked to.
            async with limit:
                give_up = time.monotonic() + 30
                while time.monotonic() < give_up:
                    try:
                        found = await stubs[0].GetCustomer(
                            pb.GetCustomerRequest(id=id), metadata=fresh, timeout=10
                        )
                        return str(found.id)
                    except grpc.aio.AioRpcError as error:
                        delay = _retry_delay(error)
                        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or delay is None:
                            raise
                        await asyncio.sleep(delay)
                raise AssertionError(f"{id} was turned away for 30 s")

        ids = [id for id, _ in seen.ok]
        assert await asyncio.gather(*(stored(id) for id in ids)) == ids
        for channel in channels:
            await channel.close()
    finally:
        await server.stop()


def _retry_info(error: grpc.aio.AioRpcError) -> bool:
    return _retry_delay(error) is not None


def _retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The seconds the error's RetryInfo asks a client to wait, or None without one."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not raw:
        return None
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None
