"""PostgreSQL gone for a few seconds under load: calls fail fast with UNAVAILABLE (never
at their deadline; a Get the cache answers may still succeed within the staleness
bound), health turns NOT_SERVING, and the same process serves again by itself once the
database is back; a watcher loses no event.

The database "stops" behind a TCP proxy that resets every connection and refuses new
ones, which is what a server sees of a stopped PostgreSQL, without stopping the
machine's shared one. SQLite has no server to lose.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from faults import ServerProcess, TcpProxy, stub
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import postgres_database
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import EventType, WatchEventsRequest

OUTAGE = 4.0
DEADLINE = 3.0
STALENESS = 0.5
"""--cache-staleness: for this long after the broker last read the outbox, a cached Get
may still be answered."""
FAST = 1.5
"""No call may take longer than this while the database is gone (the deadline is longer)."""
WRITERS = 8
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Call:
    started: float
    ended: float
    code: grpc.StatusCode
    method: str


@dataclass
class Seen:
    calls: list[Call] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    health: list[tuple[float, int]] = field(default_factory=list)
    watched: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    """By watcher, (event id, resource id) of each create it received."""
    opened: dict[str, list[float]] = field(default_factory=dict)
    """By watcher, when it opened each of its streams."""
    ends: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    """By watcher, when each of its streams ended and how: "left" (it cancelled on
    purpose), "UNAVAILABLE" (the server refused or ended it) or "ended" (the server
    closed it without an error)."""


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_database()


async def load(address: str, seen: Seen, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        service = stub(channel)

        async def timed(call: object, method: str) -> object:
            started = time.monotonic()
            try:
                result = await call  # type: ignore[misc]
                seen.calls.append(Call(started, time.monotonic(), grpc.StatusCode.OK, method))
                return result
            except grpc.aio.AioRpcError as error:
                seen.calls.append(Call(started, time.monotonic(), error.code(), method))
                await asyncio.sleep(0.05)
                return None

        async def client(w: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                request = pb.CreateCustomerRequest(customer=Customer(name=f"w{w}-{n}"))
                made = await timed(
                    service.CreateCustomer(request, timeout=DEADLINE), "CreateCustomer"
                )
                if isinstance(made, Customer):
                    seen.created.add(made.id)
                if seen.created:
                    id = random.choice(sorted(seen.created))
                    got = await timed(
                        service.GetCustomer(pb.GetCustomerRequest(id=id), timeout=DEADLINE),
                        "GetCustomer",
                    )
                    assert got is None or (isinstance(got, Customer) and got.id == id)
                    await timed(
                        service.ListCustomers(
                            pb.ListCustomersRequest(page_size=5), timeout=DEADLINE
                        ),
                        "ListCustomers",
                    )

        await asyncio.gather(*(client(w) for w in range(WRITERS)))


async def watch(
    address: str, seen: Seen, name: str, restart_every: float | None, ready: asyncio.Event
) -> None:
    """Follows every create, resuming from its last token whenever its stream ends;
    with `restart_every`, it also leaves and resumes on purpose that often. `ready` is
    set by its first response (a heartbeat): from then on it has a position."""
    token = ""
    watched = seen.watched.setdefault(name, [])
    opened = seen.opened.setdefault(name, [])
    ends = seen.ends.setdefault(name, [])
    async with grpc.aio.insecure_channel(address) as channel:
        service = stub(channel)
        while True:
            call = service.WatchEvents(WatchEventsRequest(resume_token=token))
            opened.append(time.monotonic())
            left: list[bool] = []
            if restart_every:
                asyncio.get_running_loop().call_later(
                    restart_every, lambda call=call, left=left: left.append(call.cancel())
                )
            try:
                async for response in call:
                    ready.set()
                    token = response.resume_token
                    event = response.event
                    if event.event_type == EventType.EVENT_TYPE_CUSTOMER_CREATE_NOTIFICATION:
                        watched.append((int(event.event_id), event.event.customer.id))
                ends.append((time.monotonic(), "ended"))
            except grpc.aio.AioRpcError as error:
                ends.append((time.monotonic(), error.code().name))
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                if not left:  # the test is over, not a restart
                    raise
                ends.append((time.monotonic(), "left"))


async def follow_health(address: str, seen: Seen) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if not seen.health or seen.health[-1][1] != answer.status:
                seen.health.append((time.monotonic(), answer.status))
            await asyncio.sleep(0.05)


async def test_a_database_outage_fails_fast_and_heals_itself(
    postgres_url: str, tmp_path: Path
) -> None:
    direct = make_url(postgres_url)
    proxy = TcpProxy((direct.host or "127.0.0.1", direct.port or 5432))
    await proxy.start()
    via_proxy = direct.set(port=proxy.port).render_as_string(hide_password=False)
    server = ServerProcess(
        via_proxy,
        tmp_path / "server.log",
        "--health-interval",
        "0.2",
        "--heartbeat-interval",
        "0.3",
        "--cache-staleness",
        str(STALENESS),
    )
    seen, stop = Seen(), asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await server.start()
        pid = server.process.pid if server.process else None
        ready = [asyncio.Event(), asyncio.Event()]
        tasks += [
            asyncio.create_task(watch(server.address, seen, "steady", None, ready[0])),
            asyncio.create_task(watch(server.address, seen, "restarting", 0.7, ready[1])),
            asyncio.create_task(follow_health(server.address, seen)),
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
        loading = asyncio.create_task(load(server.address, seen, stop))
        await asyncio.sleep(1.5)

        cut = time.monotonic()
        await proxy.cut()
        await asyncio.sleep(OUTAGE)
        back = time.monotonic()
        await proxy.restore()
        while not (seen.health[-1][1] == SERVING and seen.health[-1][0] > back):
            assert time.monotonic() - back < 15, f"not SERVING again: {seen.health}"
            await asyncio.sleep(0.05)
        healed = seen.health[-1][0]
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.wait_for(loading, DEADLINE + 5)

        assert server.running and server.process and server.process.pid == pid  # no restart
        down = [t for t, status in seen.health if status != SERVING]
        assert down and cut < down[0] < cut + 3, f"not NOT_SERVING in time: {seen.health}"

        before = [c for c in seen.calls if c.ended < cut]
        during = [c for c in seen.calls if cut + 0.2 < c.started and c.ended < back]
        after = [c for c in seen.calls if c.started > healed + 0.5]
        assert before and during and after
        assert {c.code for c in before} == {grpc.StatusCode.OK}
        answered = [c for c in during if c.code == grpc.StatusCode.OK]
        # Only Gets the cache held could still be answered, and only within the bound.
        assert all(c.method == "GetCustomer" and c.started < cut + STALENESS for c in answered), [
            (c.method, c.started - cut, c.ended - cut) for c in answered
        ]
        assert {c.code for c in during if c.code != grpc.StatusCode.OK} == {
            grpc.StatusCode.UNAVAILABLE
        }
        assert any(c.method == "GetCustomer" and c.code != grpc.StatusCode.OK for c in during)
        slowest = max(c.ended - c.started for c in seen.calls if c.code != grpc.StatusCode.OK)
        assert slowest < FAST, f"a failing call took {slowest:.2f} s"
        assert {c.code for c in after} == {grpc.StatusCode.OK}
        answered = [c for c in after if c.code == grpc.StatusCode.OK]
        assert len(answered) > 50
        # Every acknowledged create is stored with its event, and the watcher got them
        # all, in order, each once.
        deadline = time.monotonic() + 15
        for name, watched in seen.watched.items():
            while not seen.created <= {id for _, id in watched}:
                assert time.monotonic() < deadline, f"watcher {name} misses acknowledged creates"
                await asyncio.sleep(0.1)
            order = [seq for seq, _ in watched]
            assert order == sorted(set(order)), f"{name}: events out of order or repeated"
        # The watcher left open kept its one stream, opened before the outage, through
        # it: nothing ended it, and every create above reached it on that stream.
        assert not any(task.done() for task in tasks[:2]), [t for t in tasks[:2] if t.done()]
        assert len(seen.opened["steady"]) == 1 and seen.opened["steady"][0] < cut
        assert seen.ends["steady"] == [], [(t - cut, how) for t, how in seen.ends["steady"]]
        # The one leaving and resuming was refused (UNAVAILABLE) because of the outage:
        # never before it, again and again during it, and no longer once healed.
        ends = seen.ends["restarting"]
        refused = [t - cut for t, how in ends if how == "UNAVAILABLE"]
        assert {how for _, how in ends} <= {"left", "UNAVAILABLE"}, ends
        assert refused, f"no resume was refused: {[(t - cut, how) for t, how in ends]}"
        assert min(refused) > 0, f"refused before the outage: {refused}"
        assert len([t for t in refused if t < back - cut]) >= 3, refused
        assert max(refused) < healed + 1.0 - cut, f"refused after healing: {refused}"
        assert any(how == "left" and t < cut for t, how in ends)  # it did leave before
        assert any(how == "left" and t > healed for t, how in ends)  # and after
        engine = create_engine(postgres_url)
        try:
            with engine.connect() as connection:
                stored = set(connection.execute(text("SELECT id FROM customer")).scalars())
                events = set(
                    connection.execute(
                        text("SELECT resource_id FROM event WHERE event_type = :t"),
                        {"t": EventType.EVENT_TYPE_CUSTOMER_CREATE_NOTIFICATION},
                    ).scalars()
                )
        finally:
            engine.dispose()
        assert seen.created <= stored
        assert seen.created <= events
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop.set()
        await server.stop()
        await proxy.stop()
