"""The contract of a unit of work (store/units.py): it may run twice, first together with
its batch (rolled back when the batch fails) and then alone in a savepoint, and the
second run must give what a single run would.

Here every batch is made to fail together after all its units ran, so every unit of
every kind runs twice; the outcomes must be exactly those of single runs (one row, one
event, one PIN attempt counted, one import line loaded, one failure counted). The unit
kinds are read from the source: a new `database.write(...)` call site that this test
does not exercise fails it.
"""

from __future__ import annotations

import ast
import asyncio
import functools
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from jetstream import count, new_target, remove
from sqlalchemy import text
from test_hub import Hook, call, gateway_config

from conftest import postgres_database
from customer_management.changes.cloud_events import ContentMode
from customer_management.changes.relay import Relay, RelaySettings
from customer_management.changes.retention import (
    forget_old_events,
    forget_old_history,
    forget_old_request_ids,
)
from customer_management.domain.importing import Importer, Report
from customer_management.server import Server
from customer_management.store import outbox
from customer_management.store.database import Database
from customer_management.store.errors import StoreConflict
from customer_management.store.units import ALONE, Run, Unit
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer

SOURCE = Path(__file__).parents[1] / "src" / "customer_management"


def unit_kinds() -> set[str]:
    """The __qualname__ of the work of every `<…>database.write(work, …)` in the source."""
    kinds: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def __init__(self) -> None:
            self.scope: list[str] = []

        def _nested(self, node: Any, name: str) -> None:
            self.scope.append(name)
            self.generic_visit(node)
            self.scope.pop()

        def visit_ClassDef(self, node: ast.ClassDef) -> None:
            self._nested(node, node.name)

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            self._nested(node, node.name)

        def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
            self._nested(node, node.name)

        def visit_Call(self, node: ast.Call) -> None:
            target = node.func
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "write"
                and ast.unparse(target.value).endswith("database")
            ):
                kinds.add(self._qualname(node.args[0]))
            self.generic_visit(node)

        def _qualname(self, work: ast.expr) -> str:
            # The methods' own scopes, without the class's `<locals>`.
            local = ".".join(self.scope) + ".<locals>."
            if isinstance(work, ast.Lambda):
                return local + "<lambda>"
            if isinstance(work, ast.Name):
                return local + work.id
            if isinstance(work, ast.Call) and ast.unparse(work.func) == "partial":
                method = work.args[0]
                assert isinstance(method, ast.Attribute), ast.unparse(work)
                return ".".join([*self.scope[:-1], method.attr])
            raise AssertionError(f"a unit of work this test cannot name: {ast.unparse(work)}")

    for path in SOURCE.rglob("*.py"):
        Visitor().visit(ast.parse(path.read_text()))
    return kinds


def qualname(work: Any) -> str:
    return str((work.func if isinstance(work, functools.partial) else work).__qualname__)


@pytest.fixture(params=["sqlite", "postgresql"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'units.db'}"
    else:
        yield from postgres_database()


@pytest.fixture
def every_unit_twice(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, Run]]:
    """Makes every batch fail together once its units ran (as a constraint refusing the
    commit would), so that each runs again alone; counts the runs by kind."""
    runs: Counter[tuple[str, Run]] = Counter()
    run_writes = Database._run_writes
    flush = outbox.flush

    def counted(database: Database, units: list[Unit], guard: Any) -> Any:
        def counting(work: Any) -> Any:
            def run(session: Any, run: Run) -> Any:
                runs[(qualname(work), run)] += 1
                return work(session, run)

            return run

        return run_writes(database, [Unit(counting(u.work), u.lock) for u in units], guard)

    def refused_together(session: Any) -> Any:
        if not session.info.get(ALONE):
            raise StoreConflict("the test refuses every batch's first commit")
        return flush(session)

    monkeypatch.setattr(Database, "_run_writes", counted)
    monkeypatch.setattr(outbox, "flush", refused_together)
    return runs


async def test_every_unit_kind_run_twice_gives_what_one_run_gives(
    own_database: str, nats_url: str, every_unit_twice: Counter[tuple[str, Run]]
) -> None:
    hook = Hook()
    await hook.start()
    server = Server(gateway_config(own_database))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            await exercise(server, stub, hook)
            await relay_once(server, nats_url)
    finally:
        await server.stop(grace=1)
        await hook.stop()
    kinds = unit_kinds()
    assert {kind for kind, _ in every_unit_twice} == kinds
    for kind in kinds:
        assert every_unit_twice[(kind, Run.TOGETHER)] >= 1, kind
        assert every_unit_twice[(kind, Run.ALONE)] == every_unit_twice[(kind, Run.TOGETHER)], kind


async def relay_once(server: Server, nats_url: str) -> None:
    """The NATS relay (in this process, on the server's database): its lease claimed and
    renewed, its position saved once each time, and the lease released."""
    target = new_target(nats_url)
    relay = Relay(
        server.database,
        RelaySettings(
            url=target.url,
            stream=target.stream,
            subject_prefix=target.prefix,
            content_mode=ContentMode.JSON,
            duplicate_window=120,
            source="https://cm.example",
        ),
    )
    latest = (await server.database.read(outbox.history)).latest
    await relay.start()
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while await count(target) < latest:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # quiet: the position is saved
    finally:
        await relay.stop()
        await remove(target)
    position = await server.database.read(
        lambda session: session.execute(text("SELECT seq, lease_owner FROM event_relay")).one()
    )
    assert tuple(position) == (latest, None)


async def exercise(server: Server, stub: Any, hook: Hook) -> None:
    port = server.http_port
    events = await server.database.read(outbox.count)

    def count(table: str) -> Any:
        return lambda session: session.execute(text(f"SELECT count(*) FROM {table}")).scalar()

    changes = await server.database.read(count("resource_change"))

    # Hub listeners: registered, claimed, delivered to, failing, released, removed.
    status, _ = await call(port, "POST", "/hub", {"callback": hook.url})
    assert status == 201
    refusing = Hook()
    refusing.refuse = 1_000_000
    await refusing.start()
    _, failing = await call(port, "POST", "/hub", {"callback": refusing.url})
    assert await server.database.read(count("hub_listener")) == 2

    # Resources: created (with a request id, and again), updated, deleted.
    request = pb.CreateCustomerRequest(customer=Customer(name="once"), request_id="r-1")
    first = await stub.CreateCustomer(request)
    assert await server.database.read(count("customer")) == 1
    assert (await stub.CreateCustomer(request)).id == first.id
    updated = await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=first.id, name="twice", etag="1"))
    )
    assert updated.etag == "2"
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=first.id, etag="2"))
    assert await server.database.read(count("customer")) == 0

    # A PIN: a wrong attempt is counted once, a right one clears the count.
    account = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(name="a", account_type="billing", pin="4711")
        )
    )
    verify = stub.VerifyCustomerAccountPin
    wrong = await verify(pb.VerifyCustomerAccountPinRequest(id=account.id, pin="4712"))
    assert (wrong.match, wrong.attempts_left) == (False, 4)
    right = await verify(pb.VerifyCustomerAccountPinRequest(id=account.id, pin="4711"))
    assert (right.match, right.attempts_left) == (True, 5)

    # The bulk import: each line loaded once.
    report = Report()
    await Importer(server.gateway.services).load(
        [(1, '{"@type": "Customer", "name": "imported"}')], report
    )
    assert report.loaded == Counter(customer=1) and not report.rejected
    assert await server.database.read(count("customer")) == 1

    # One event per change (create, update, delete, the account, the import), each
    # delivered once to the listener.
    assert await server.database.read(outbox.count) == events + 5
    notes = await hook.wait_for(5)
    await asyncio.sleep(0.5)
    assert len(hook.received) == 5
    assert len({note["eventId"] for note in notes}) == 5
    # One history entry per change too, written in the same transaction.
    assert await server.database.read(count("resource_change")) == changes + 5

    # The refused listener's failures are counted once each.
    deadline = asyncio.get_running_loop().time() + 20
    while (await call(port, "GET", f"/hub/{failing['id']}"))[1]["failures"] < 3:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    await call(port, "DELETE", f"/hub/{failing['id']}")
    failures = refusing.refused
    await refusing.stop()
    assert await server.database.read(count("hub_listener")) == 1
    _, state = await call(port, "GET", f"/hub/{failing['id']}")
    assert state["code"] == "RESOURCE_NOT_FOUND" and failures >= 3

    # Retention: nothing is old enough to go.
    assert await forget_old_request_ids(server.database, timedelta(days=1)) == 0
    assert await forget_old_events(server.database, timedelta(days=1)) == 0
    assert await forget_old_history(server.database, timedelta(days=1)) == 0
