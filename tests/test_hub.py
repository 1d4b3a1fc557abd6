"""Hub notifications through the REST gateway, received by a real HTTP listener: the
registration rules, the TMF notification shape, filters, order, retries, a listener
that keeps failing, and delivery resumed across a gateway restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web

from conftest import postgres_database
from customer_management.changes import delivery
from customer_management.config import Config
from customer_management.server import Server
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer

BASE = "/tmf-api/customerManagement/v2"
WAIT = 20.0


class Hook:
    """An HTTP listener: records each notification; answers 503 to the first `refuse`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts: list[float] = []
        """When each POST arrived (the event loop's clock), refused or taken."""
        self.refused = 0
        self.refuse = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _take(self, request: web.Request) -> web.Response:
        self.attempts.append(asyncio.get_running_loop().time())
        assert request.content_type == "application/json"
        body = await request.json()
        if self.refused < self.refuse:
            self.refused += 1
            return web.Response(status=503)
        self.received.append(body)
        return web.Response(status=201)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/listener", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/listener"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + WAIT
        while len(self.received) < count:
            assert asyncio.get_running_loop().time() < deadline, self.received
            await asyncio.sleep(0.05)
        return self.received


@pytest_asyncio.fixture
async def hook() -> AsyncIterator[Hook]:
    listener = Hook()
    await listener.start()
    yield listener
    await listener.stop()


async def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{port}{BASE}{path}", json=body) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def created(port: int, collection: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = await call(port, "POST", f"/{collection}", body)
    assert status == 201, answer
    return answer  # type: ignore[no-any-return]


async def test_register_get_and_delete(server: Server, hook: Hook) -> None:
    port = server.http_port
    status, listener = await call(port, "POST", "/hub", {"callback": hook.url, "query": ""})
    assert status == 201 and listener["callback"] == hook.url
    assert listener["status"] == "active" and listener["failures"] == 0
    status, found = await call(port, "GET", f"/hub/{listener['id']}")
    assert (status, found) == (200, listener)
    status, _ = await call(port, "DELETE", f"/hub/{listener['id']}")
    assert status == 204
    status, answer = await call(port, "GET", f"/hub/{listener['id']}")
    assert (status, answer["code"]) == (404, "RESOURCE_NOT_FOUND")
    status, _ = await call(port, "DELETE", f"/hub/{listener['id']}")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"callback": "http://169.254.169.254/latest"}, "callback"),  # not an allowed host
        ({"callback": "http://localhost/x"}, "callback"),
        ({"callback": "file:///etc/passwd"}, "callback"),
        ({"callback": "http://user:pw@127.0.0.1/x"}, "callback"),
        ({"callback": "http://127.0.0.1:99999/x"}, "callback"),
        ({}, "callback"),
        ({"callback": 5}, "callback"),
        ({"callback": "http://127.0.0.1/x", "query": "eventType=Nope"}, "query"),
        ({"callback": "http://127.0.0.1/x", "query": "colour=blue"}, "query"),
        ({"callback": "http://127.0.0.1/x", "query": "a" * 3000}, "query"),
        ({"callback": "http://127.0.0.1/x", "extra": 1}, "extra"),
    ],
)
async def test_registration_is_refused_with_the_field_at_fault(
    server: Server, body: dict[str, Any], field: str
) -> None:
    status, answer = await call(server.http_port, "POST", "/hub", body)
    assert status == 400, answer
    assert answer["fieldViolations"][0]["field"] == field


async def test_notifications_arrive_in_order_filtered_in_tmf_shape(
    server: Server, hook: Hook
) -> None:
    port = server.http_port
    everything = Hook()
    await everything.start()
    try:
        query = "eventType=CustomerCreateNotification,CustomerUpdateNotification&status=Approved"
        await call(port, "POST", "/hub", {"callback": hook.url, "query": query})
        await call(port, "POST", "/hub", {"callback": everything.url})
        ann = await created(port, "customer", {"name": "Ann", "status": "Approved"})
        await created(port, "customer", {"name": "Bob"})  # not Approved
        await created(port, "customerAccount", {"name": "A", "accountType": "R"})
        status, _ = await call(port, "PATCH", f"/customer/{ann['id']}", {"description": "vip"})
        assert status == 200
        status, _ = await call(port, "DELETE", f"/customer/{ann['id']}")  # not asked for
        assert status == 204

        received = await hook.wait_for(2)
        assert [n["eventType"] for n in received] == [
            "CustomerCreateNotification",
            "CustomerUpdateNotification",
        ]
        first = received[0]
        assert set(first) == {"eventId", "eventTime", "eventType", "event"}
        assert first["event"]["customer"]["id"] == ann["id"]
        assert first["event"]["customer"]["href"] == ann["href"]
        assert received[1]["event"]["customer"]["description"] == "vip"
        assert int(received[0]["eventId"]) < int(received[1]["eventId"])

        all_of_them = await everything.wait_for(5)
        assert [n["eventType"] for n in all_of_them] == [
            "CustomerCreateNotification",
            "CustomerCreateNotification",
            "CustomerAccountCreateNotification",
            "CustomerUpdateNotification",
            "CustomerDeleteNotification",
        ]
        assert "customerAccount" in all_of_them[2]["event"]
        ids = [int(n["eventId"]) for n in all_of_them]
        assert ids == sorted(ids)
        # Credit categories' notifications, beyond TMF629's nine, reach a listener too.
        gold = await created(port, "creditCategory", {"code": "GOLD"})
        (category,) = (await everything.wait_for(6))[5:]
        assert category["eventType"] == "CreditCategoryCreateNotification"
        assert category["event"]["creditCategory"]["id"] == gold["id"]
        await asyncio.sleep(0.5)
        assert len(hook.received) == 2  # nothing else matched
    finally:
        await everything.stop()


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "FIRST_BACKOFF", 0.02)
    monkeypatch.setattr(delivery, "MAX_BACKOFF", 0.05)


async def test_failed_deliveries_are_retried_in_order_and_a_failing_listener_is_reported(
    server: Server, hook: Hook, quick_backoff: None
) -> None:
    port = server.http_port
    hook.refuse = 3
    _, flaky = await call(port, "POST", "/hub", {"callback": hook.url})
    dead = "http://127.0.0.1:9/nobody-listens"  # the discard port: refused
    _, broken = await call(port, "POST", "/hub", {"callback": dead})
    healthy = Hook()
    await healthy.start()
    try:
        await call(port, "POST", "/hub", {"callback": healthy.url})
        for name in ("one", "two", "three"):
            await created(port, "customer", {"name": name})
        # The healthy listener gets all three while the others retry.
        assert [n["event"]["customer"]["name"] for n in await healthy.wait_for(3)] == [
            "one",
            "two",
            "three",
        ]
        names = [n["event"]["customer"]["name"] for n in await hook.wait_for(3)]
        assert names == ["one", "two", "three"] and hook.refused == 3
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            _, state = await call(port, "GET", f"/hub/{broken['id']}")
            if state["status"] == "failing":
                break
            assert asyncio.get_running_loop().time() < deadline, state
            await asyncio.sleep(0.1)
        assert state["failures"] >= 5 and "unreachable" in state["lastError"]
        _, state = await call(port, "GET", f"/hub/{flaky['id']}")
        assert (state["status"], state["failures"]) == ("active", 0)
        assert "lastDeliveryTime" in state
    finally:
        await healthy.stop()


async def test_redelivery_waits_twice_as_long_after_each_failure(
    server: Server, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed POST is retried after FIRST_BACKOFF, then twice that, and so on (each
    wait jittered by +-20%, rest/delivery.py). The first wait is made short here so that
    five failures take about 1.5 s."""
    first = 0.1
    monkeypatch.setattr(delivery, "FIRST_BACKOFF", first)
    slack = 0.25  # the POST, recording the failure and a loaded machine, on top of a wait
    failures = 5
    hook.refuse = failures
    await call(server.http_port, "POST", "/hub", {"callback": hook.url})
    await created(server.http_port, "customer", {"name": "retried"})
    assert [n["event"]["customer"]["name"] for n in await hook.wait_for(1)] == ["retried"]
    assert len(hook.attempts) == failures + 1
    gaps = [b - a for a, b in zip(hook.attempts, hook.attempts[1:], strict=False)]
    for n, gap in enumerate(gaps):
        wait = first * 2**n
        assert 0.8 * wait <= gap <= 1.2 * wait + slack, (n, [round(g, 3) for g in gaps])


@pytest.fixture(params=["sqlite", "postgresql"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        yield from postgres_database()


def gateway_config(database_url: str, http_port: int = 0) -> Config:
    return Config(
        port=0,
        http_port=http_port,
        database_url=database_url,
        hub_allowed_hosts="127.0.0.1",
        hub_claim_interval=0.2,
    )


async def test_delivery_resumes_after_a_gateway_restart(own_database: str, hook: Hook) -> None:
    first = Server(gateway_config(own_database))
    await first.start()
    port = first.http_port
    await call(port, "POST", "/hub", {"callback": hook.url})
    await created(port, "customer", {"name": "before"})
    await hook.wait_for(1)
    await first.stop(grace=1)

    # Changes made while no gateway runs: another replica, without one, makes them.
    other = Server(gateway_config(own_database, http_port=-1))
    await other.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            for name in ("while-down-1", "while-down-2"):
                await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name=name)))
    finally:
        await other.stop(grace=1)

    again = Server(gateway_config(own_database, http_port=port))
    await again.start()
    try:
        await created(port, "customer", {"name": "after"})
        received = await hook.wait_for(4)
        assert [n["event"]["customer"]["name"] for n in received] == [
            "before",
            "while-down-1",
            "while-down-2",
            "after",
        ]
        await asyncio.sleep(0.5)
        assert len(hook.received) == 4  # resumed where it stopped: nothing twice
    finally:
        await again.stop(grace=1)


async def test_replicas_share_a_listener_and_deliver_each_event_once(own_database: str) -> None:
    """Two gateways on one database: the listener's lease keeps its events in order and
    single; when the replica holding it stops, the other carries on."""
    hook = Hook()
    await hook.start()
    replicas = [Server(gateway_config(own_database)) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        await call(replicas[0].http_port, "POST", "/hub", {"callback": hook.url})
        for i in range(10):
            await created(replicas[i % 2].http_port, "customer", {"name": f"c{i}"})
        await hook.wait_for(10)
        holder = next(r for r in replicas if r.dispatcher and r.dispatcher._deliveries)
        await holder.stop(grace=1)
        replicas.remove(holder)
        for i in range(10, 15):
            await created(replicas[0].http_port, "customer", {"name": f"c{i}"})
        await hook.wait_for(15)
        await asyncio.sleep(0.5)
        names = [n["event"]["customer"]["name"] for n in hook.received]
        assert names == [f"c{i}" for i in range(15)]
    finally:
        for replica in replicas:
            await replica.stop(grace=1)
        await hook.stop()
