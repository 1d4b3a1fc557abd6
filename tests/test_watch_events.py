"""WatchEvents through a real server: the nine notifications (and credit categories'
three), filters, resume, snapshot, heartbeats, slow consumers, budgets, shutdown,
replicas and late commits."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from test_all_resources import card

from conftest import postgres_database
from customer_management.changes.retention import forget_old_events
from customer_management.changes.watching import token
from customer_management.config import Config
from customer_management.domain import notifications, wire
from customer_management.domain.notifications import Change
from customer_management.server import Server
from customer_management.store import outbox
from customer_management.store.guards import Guard
from customer_management.store.units import Run, Unit
from helpers import details, fails, latest_token
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.common_pb2 import CustomerRef
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import EventType, WatchEventsRequest, WatchEventsResponse
from tmf629.v1.payment_mean_pb2 import PaymentMean

T = EventType
WAIT = 10.0


class Watch:
    """One WatchEvents stream, read in the background into a queue."""

    def __init__(self, stub: Any, request: WatchEventsRequest | None = None) -> None:
        self.call = stub.WatchEvents(request or WatchEventsRequest())
        self.responses: asyncio.Queue[WatchEventsResponse | BaseException] = asyncio.Queue()
        self.last_token = ""
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                await self.responses.put(response)
        except BaseException as error:
            await self.responses.put(error)

    async def next(self, *kinds: str, within: float = WAIT) -> WatchEventsResponse:
        """The next response of one of `kinds` (default: events), skipping heartbeats."""
        kinds = kinds or ("event",)
        while True:
            item = await asyncio.wait_for(self.responses.get(), within)
            if isinstance(item, BaseException):
                raise item
            self.last_token = item.resume_token
            if item.WhichOneof("kind") in kinds:
                return item

    async def events(self, count: int) -> list[Any]:
        return [(await self.next()).event for _ in range(count)]

    async def ended(self, within: float = WAIT) -> grpc.aio.AioRpcError:
        while True:
            item = await asyncio.wait_for(self.responses.get(), within)
            if isinstance(item, grpc.aio.AioRpcError):
                return item
            assert not isinstance(item, BaseException), item
            self.last_token = item.resume_token

    async def nothing_for(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            item = await self.next(within=seconds)
            raise AssertionError(f"unexpected {item}")

    async def close(self) -> None:
        self.call.cancel()
        with contextlib.suppress(BaseException):
            await self._task


@pytest.fixture
async def watch(stub, server) -> AsyncIterator[Any]:
    opened: list[Watch] = []

    async def open_(request: WatchEventsRequest | None = None) -> Watch:
        request = request or WatchEventsRequest()
        if not request.resume_token and not request.initial_state:
            # "From now" is when the call reaches the server; resuming from the latest
            # event instead fixes the start before the test writes anything.
            request.resume_token = await latest_token(server)
        w = Watch(stub, request)
        opened.append(w)
        return w

    yield open_
    for w in opened:
        await w.close()


@contextlib.asynccontextmanager
async def own_server(database_url: str, **settings: Any) -> AsyncIterator[Server]:
    """A server of the test's own, for settings the shared one does not have."""
    server = Server(Config(port=0, database_url=database_url, **settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1)


@contextlib.asynccontextmanager
async def stub_of(server: Server, options: Any = None) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options) as channel:
        yield service_pb2_grpc.CustomerManagementServiceStub(channel)


async def customer(stub: Any, name: str = "c", **fields: Any) -> Customer:
    return await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=Customer(name=name, **fields))
    )


async def credit_category(stub: Any, code: str, **fields: Any) -> CreditCategory:
    return await stub.CreateCreditCategory(
        pb.CreateCreditCategoryRequest(credit_category=CreditCategory(code=code, **fields))
    )


# -- the contract ---------------------------------------------------------------------


async def test_all_nine_notifications_carry_the_resource(stub, watch) -> None:
    w = await watch()
    c = await customer(stub, "Jane")
    c2 = await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=c.id, name="Jane Doe", status="Active"))
    )
    a = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(
                name="main", account_type="Residential", customer=CustomerRef(id=c.id)
            )
        )
    )
    a2 = await stub.UpdateCustomerAccount(
        pb.UpdateCustomerAccountRequest(customer_account=CustomerAccount(id=a.id, name="billing"))
    )
    p = await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(
            payment_mean=PaymentMean(name="visa", type="CreditCard", credit_card=card())
        )
    )
    p2 = await stub.UpdatePaymentMean(
        pb.UpdatePaymentMeanRequest(payment_mean=PaymentMean(id=p.id, name="my visa"))
    )
    await stub.DeletePaymentMean(pb.DeletePaymentMeanRequest(id=p.id))
    await stub.DeleteCustomerAccount(pb.DeleteCustomerAccountRequest(id=a.id))
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=c.id))

    events = await w.events(9)
    assert [e.event_type for e in events] == [
        T.EVENT_TYPE_CUSTOMER_CREATE_NOTIFICATION,
        T.EVENT_TYPE_CUSTOMER_UPDATE_NOTIFICATION,
        T.EVENT_TYPE_CUSTOMER_ACCOUNT_CREATE_NOTIFICATION,
        T.EVENT_TYPE_CUSTOMER_ACCOUNT_UPDATE_NOTIFICATION,
        T.EVENT_TYPE_PAYMENT_MEAN_CREATE_NOTIFICATION,
        T.EVENT_TYPE_PAYMENT_MEAN_UPDATE_NOTIFICATION,
        T.EVENT_TYPE_PAYMENT_MEAN_DELETE_NOTIFICATION,
        T.EVENT_TYPE_CUSTOMER_ACCOUNT_DELETE_NOTIFICATION,
        T.EVENT_TYPE_CUSTOMER_DELETE_NOTIFICATION,
    ]
    # The whole resource as Get returned it after the change; a delete has the last state.
    assert [e.event.WhichOneof("resource") for e in events] == [
        "customer", "customer", "customer_account", "customer_account",
        "payment_mean", "payment_mean", "payment_mean", "customer_account", "customer",
    ]  # fmt: skip
    assert events[0].event.customer == c
    assert events[1].event.customer == c2
    assert events[2].event.customer_account == a
    assert events[3].event.customer_account == a2
    assert events[4].event.payment_mean == p
    assert events[5].event.payment_mean == p2
    assert events[6].event.payment_mean == p2
    assert events[7].event.customer_account == a2
    assert events[8].event.customer == c2
    # Update events name what changed; ids are unique and rise in commit order.
    assert list(events[1].changed_fields.paths) == ["name", "status"]
    assert list(events[3].changed_fields.paths) == ["name"]
    assert not events[0].changed_fields.paths
    ids = [int(e.event_id) for e in events]
    assert ids == sorted(set(ids))
    assert events[0].event_time == c.create_time
    assert events[1].event_time == c2.update_time


async def test_credit_categories_have_three_notifications_and_a_state(stub, watch) -> None:
    w = await watch()
    created = await credit_category(stub, "GOLD", description="Gold")
    updated = await stub.UpdateCreditCategory(
        pb.UpdateCreditCategoryRequest(
            credit_category=CreditCategory(id=created.id, description="Golden")
        )
    )
    await stub.DeleteCreditCategory(pb.DeleteCreditCategoryRequest(id=created.id))
    events = await w.events(3)
    assert [e.event_type for e in events] == [
        EventType.EVENT_TYPE_CREDIT_CATEGORY_CREATE_NOTIFICATION,
        EventType.EVENT_TYPE_CREDIT_CATEGORY_UPDATE_NOTIFICATION,
        EventType.EVENT_TYPE_CREDIT_CATEGORY_DELETE_NOTIFICATION,
    ]
    assert events[0].event.credit_category == created
    assert events[1].event.credit_category == updated
    assert list(events[1].changed_fields.paths) == ["description"]
    assert events[2].event.credit_category == updated

    kept = await credit_category(stub, "SILVER")
    only = WatchEventsRequest(
        initial_state=True,
        event_types=[EventType.EVENT_TYPE_CREDIT_CATEGORY_UPDATE_NOTIFICATION],
    )
    snapshot = await watch(only)
    first = await snapshot.next("snapshot")
    assert first.snapshot.credit_category == kept
    await snapshot.next("snapshot_complete")


async def test_event_json_has_the_tmf_notification_shape(stub, watch) -> None:
    w = await watch()
    c = await customer(stub, "Jane")
    event = json_format.MessageToDict((await w.next()).event)
    assert set(event) == {"eventId", "eventTime", "eventType", "event"}
    assert event["eventType"] == "EVENT_TYPE_CUSTOMER_CREATE_NOTIFICATION"
    assert event["event"]["customer"]["id"] == c.id
    assert event["eventTime"].endswith("Z")


async def test_an_update_that_changes_nothing_emits_no_event(stub, watch) -> None:
    c = await customer(stub, "Jane", status="Active")
    w = await watch()
    same = await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=c.id, name="Jane"))
    )
    assert same.etag == c.etag
    await w.nothing_for(0.7)
    await stub.UpdateCustomer(pb.UpdateCustomerRequest(customer=Customer(id=c.id, name="J")))
    assert (await w.next()).event.event_type == T.EVENT_TYPE_CUSTOMER_UPDATE_NOTIFICATION


async def test_filters_by_event_type_and_resource_id(stub, watch) -> None:
    a, b = await customer(stub, "a"), await customer(stub, "b")
    by_type = await watch(
        WatchEventsRequest(event_types=[T.EVENT_TYPE_CUSTOMER_DELETE_NOTIFICATION])
    )
    by_id = await watch(WatchEventsRequest(resource_ids=[b.id]))
    await stub.UpdateCustomer(pb.UpdateCustomerRequest(customer=Customer(id=a.id, name="a2")))
    await stub.UpdateCustomer(pb.UpdateCustomerRequest(customer=Customer(id=b.id, name="b2")))
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=a.id))
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=b.id))
    deletes = await by_type.events(2)
    assert [e.event.customer.id for e in deletes] == [a.id, b.id]
    about_b = await by_id.events(2)
    assert [e.event_type for e in about_b] == [
        T.EVENT_TYPE_CUSTOMER_UPDATE_NOTIFICATION,
        T.EVENT_TYPE_CUSTOMER_DELETE_NOTIFICATION,
    ]
    await by_id.nothing_for(0.3)


async def test_bad_requests_name_the_field(stub) -> None:
    bad = await fails(
        _first(stub.WatchEvents(WatchEventsRequest(event_types=[0, 42], resource_ids=["", "x"]))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad["fields"] == ["event_types[0]", "event_types[1]", "resource_ids[0]"]
    bad = await fails(
        _first(stub.WatchEvents(WatchEventsRequest(resume_token="not a token!"))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad["reason"] == "INVALID_RESUME_TOKEN"
    both = await fails(
        _first(stub.WatchEvents(WatchEventsRequest(resume_token="x", initial_state=True))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert both["fields"] == ["initial_state"]


async def _first(call: Any) -> WatchEventsResponse:
    async for response in call:
        return response
    raise AssertionError("the stream ended without a response")


# -- guarantees -----------------------------------------------------------------------


async def test_resume_after_disconnects_misses_and_repeats_nothing(stub, watch, sql) -> None:
    (start,) = sql("SELECT coalesce(max(seq), 0) FROM event")[0]
    first = await watch()  # resumes from `start`, whenever the call reaches the server
    stop = asyncio.Event()
    acknowledged = 0

    async def write() -> None:
        nonlocal acknowledged
        i = 0
        while not stop.is_set():
            batch = [customer(stub, f"w{i}-{j}") for j in range(5)]
            created = await asyncio.gather(*batch)
            await asyncio.gather(
                *(
                    stub.UpdateCustomer(
                        pb.UpdateCustomerRequest(customer=Customer(id=c.id, description="x"))
                    )
                    for c in created
                )
            )
            acknowledged += 10
            i += 1

    writers = [asyncio.create_task(write()) for _ in range(3)]
    seen: list[int] = []
    resume = ""
    for reconnect in range(20):
        w = first if reconnect == 0 else await watch(WatchEventsRequest(resume_token=resume))
        for _ in range(7):
            seen.append(int((await w.next()).event.event_id))
        resume = w.last_token
        await w.close()
    stop.set()
    await asyncio.gather(*writers)
    w = await watch(WatchEventsRequest(resume_token=resume))
    (end,) = sql("SELECT max(seq) FROM event")[0]
    while seen[-1] < end:
        seen.append(int((await w.next()).event.event_id))
    committed = [
        seq for (seq,) in sql("SELECT seq FROM event WHERE seq > :s ORDER BY seq", s=start)
    ]
    assert seen == committed[: len(seen)]
    assert len(committed) == acknowledged
    assert seen == committed


async def test_a_token_older_than_the_history_has_expired(stub, watch, server) -> None:
    w = await watch()
    await customer(stub)
    await w.next()
    old = w.last_token
    await customer(stub)
    await forget_old_events(server.database, timedelta(0))
    expired = await fails(
        _first(stub.WatchEvents(WatchEventsRequest(resume_token=old))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert expired["reason"] == "RESUME_TOKEN_EXPIRED"
    # A token from another database is refused too, never taken as "from now".
    unknown = await fails(
        _first(stub.WatchEvents(WatchEventsRequest(resume_token=token("another", 1)))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert unknown["reason"] == "RESUME_TOKEN_UNKNOWN"


async def test_an_event_is_written_with_its_change_and_only_then(stub, watch, sql) -> None:
    (start,) = sql("SELECT coalesce(max(seq), 0) FROM event")[0]
    w = await watch()
    # One request of a concurrent batch fails (a missing reference); the others commit.
    results = await asyncio.gather(
        *(customer(stub, f"ok{i}") for i in range(10)),
        stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(
                customer_account=CustomerAccount(
                    name="a", account_type="x", customer=CustomerRef(id="missing")
                )
            )
        ),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, Customer)]
    assert len(ok) == 10 and isinstance(results[-1], grpc.aio.AioRpcError)
    events = await w.events(10)
    assert {e.event.customer.id for e in events} == {c.id for c in ok}
    await w.nothing_for(0.5)
    stored = sql("SELECT event_type, resource_id FROM event WHERE seq > :s", s=start)
    assert sorted(r[1] for r in stored) == sorted(c.id for c in ok)


async def test_a_failed_unit_in_a_group_commit_leaves_no_event(server, sql) -> None:
    """The savepoint path: one unit of the batch records its event, then fails."""
    (start,) = sql("SELECT coalesce(max(seq), 0) FROM event")[0]
    now = datetime.now(UTC)

    def recording(id: str, fail: bool) -> Any:
        def unit(session: Session, run: Run) -> str:
            built = notifications.header("customer", Change.CREATE, now)
            outbox.record(
                session,
                event_type=built.event_type,
                resource_id=id,
                event_time=now,
                body=wire.event(built, "customer", Customer(id=id).SerializeToString()),
            )
            if fail:
                raise ValueError("refused after recording")
            return id

        return unit

    units = [Unit(recording(name, name == "bad")) for name in ("one", "bad", "two")]
    outcomes = await asyncio.to_thread(server.database._run_writes, units, Guard())
    assert [o.value for o in outcomes] == ["one", None, "two"]
    assert isinstance(outcomes[1].error, ValueError)
    stored = sql("SELECT resource_id FROM event WHERE seq > :s ORDER BY seq", s=start)
    assert [r[0] for r in stored] == ["one", "two"]


async def test_a_failing_event_listener_never_repeats_a_commit(stub, server, sql) -> None:
    def broken(events: object) -> None:
        raise RuntimeError("listener down")

    server.database.on_events(broken)
    try:
        created = await asyncio.gather(*(customer(stub, f"once{i}") for i in range(5)))
    finally:
        server.database._event_listeners.remove(broken)
    names = sorted(r[0] for r in sql("SELECT name FROM customer WHERE name LIKE 'once%'"))
    assert names == sorted(c.name for c in created)


async def test_secrets_never_reach_an_event(stub, watch, sql) -> None:
    (start,) = sql("SELECT coalesce(max(seq), 0) FROM event")[0]
    w = await watch()
    account = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(name="a", account_type="x", pin="918273")
        )
    )
    await stub.UpdateCustomerAccount(
        pb.UpdateCustomerAccountRequest(
            customer_account=CustomerAccount(id=account.id, pin="564738")
        )
    )
    await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(
            payment_mean=PaymentMean(name="visa", type="CreditCard", credit_card=card())
        )
    )
    events = await w.events(3)
    assert list(events[1].changed_fields.paths) == ["pin"]
    streamed = b"".join(e.SerializeToString() for e in events)
    stored = b"".join(bytes(b) for (b,) in sql("SELECT body FROM event WHERE seq > :s", s=start))
    for secret in (b"918273", b"564738", b"4111111111111111"):
        assert secret not in streamed and secret not in stored
    assert events[2].event.payment_mean.credit_card.number.endswith("1111")


async def test_initial_state_then_changes_without_a_gap(stub, watch) -> None:
    existing = [await customer(stub, f"s{i}") for i in range(3)]
    other = await customer(stub, "not watched")
    w = await watch(
        WatchEventsRequest(initial_state=True, resource_ids=[c.id for c in existing] + ["nope"])
    )
    snapshot = [(await w.next("snapshot")).snapshot.customer for _ in existing]
    assert sorted(snapshot, key=lambda c: c.id) == sorted(existing, key=lambda c: c.id)
    complete = await w.next("snapshot_complete", "snapshot", "event")
    assert complete.WhichOneof("kind") == "snapshot_complete"
    await stub.UpdateCustomer(pb.UpdateCustomerRequest(customer=Customer(id=other.id, name="o")))
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=existing[0].id))
    (event,) = await w.events(1)
    assert event.event_type == T.EVENT_TYPE_CUSTOMER_DELETE_NOTIFICATION
    assert event.event.customer.id == existing[0].id


async def test_snapshot_of_accounts_only_when_only_account_events_are_asked(stub, watch) -> None:
    c = await customer(stub)
    a = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(
                name="a", account_type="x", customer=CustomerRef(id=c.id)
            )
        )
    )
    w = await watch(
        WatchEventsRequest(
            initial_state=True, event_types=[T.EVENT_TYPE_CUSTOMER_ACCOUNT_UPDATE_NOTIFICATION]
        )
    )
    first = await w.next("snapshot", "snapshot_complete")
    assert first.snapshot.customer_account == a
    assert (await w.next("snapshot", "snapshot_complete")).HasField("snapshot_complete")


# -- servers of their own -------------------------------------------------------------


async def test_idle_streams_get_heartbeats_with_the_latest_token(database_url) -> None:
    async with own_server(database_url, heartbeat_interval=0.2) as server, stub_of(server) as stub:
        w = Watch(stub, WatchEventsRequest(event_types=[T.EVENT_TYPE_CUSTOMER_DELETE_NOTIFICATION]))
        first = await w.next("heartbeat")
        await customer(stub)  # filtered out, but the position moves on
        while (later := await w.next("heartbeat")).resume_token == first.resume_token:
            pass
        # Resuming from the heartbeat's token does not replay the filtered-out create.
        resumed = Watch(stub, WatchEventsRequest(resume_token=later.resume_token))
        assert (await resumed.next("heartbeat", "event")).HasField("heartbeat")
        await w.close()
        await resumed.close()


async def test_a_slow_consumer_is_cut_off_and_others_keep_up(database_url) -> None:
    async with (
        own_server(database_url, watch_buffer=20, heartbeat_interval=0.2) as server,
        stub_of(server) as stub,
        # A fixed 64 KiB receive window, so HTTP/2 cannot absorb the backlog for it.
        stub_of(server, [("grpc.http2.bdp_probe", 0)]) as slow_stub,
    ):
        slow = slow_stub.WatchEvents(WatchEventsRequest())
        first = await slow.read()  # a heartbeat: it has started; now it reads nothing
        assert first is not None
        fast = Watch(stub)
        await asyncio.sleep(0.2)
        big = "x" * 4000
        created = [await customer(stub, f"c{i}", description=big) for i in range(200)]
        events = await fast.events(200)
        assert [e.event.customer.id for e in events] == [c.id for c in created]
        seen = 0
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while True:
                response = await asyncio.wait_for(slow.read(), WAIT)
                assert response is not grpc.aio.EOF
                seen += response.HasField("event")
        assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = details(ended.value)
        assert info["reason"] == "WATCHER_TOO_SLOW"
        # Its token resumes exactly where it stopped.
        resumed = Watch(stub, WatchEventsRequest(resume_token=info["metadata"]["resume_token"]))
        rest = await resumed.events(200 - seen)
        assert [e.event.customer.id for e in rest] == [c.id for c in created[seen:]]
        await fast.close()
        await resumed.close()


async def test_watchers_have_a_budget_of_their_own(database_url) -> None:
    async with own_server(database_url, max_watchers=2) as server, stub_of(server) as stub:
        open_ = [Watch(stub), Watch(stub)]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        refused = await fails(
            _first(stub.WatchEvents(WatchEventsRequest())), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert refused["reason"] == "TOO_MANY_WATCHERS"
        # A stream that asks for its initial state needs a slot first, too.
        snapshotting = await fails(
            _first(stub.WatchEvents(WatchEventsRequest(initial_state=True))),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert snapshotting["reason"] == "TOO_MANY_WATCHERS"
        assert time.monotonic() - started < 2
        assert (await customer(stub)).id  # unary calls are not held up
        for w in open_:
            await w.close()
        await asyncio.sleep(0.3)
        again = Watch(stub)
        await customer(stub)
        assert (await again.next()).HasField("event")
        await again.close()


async def test_shutdown_ends_watchers_at_once_with_their_token(database_url) -> None:
    server = Server(Config(port=0, database_url=database_url, grace_period=30))
    await server.start()
    async with stub_of(server) as stub:
        w = Watch(stub)
        await asyncio.sleep(0.2)
        await customer(stub)
        await w.next()
        started = time.monotonic()
        stopping = asyncio.create_task(server.stop())
        ended = await w.ended()
        assert time.monotonic() - started < 5
        assert ended.code() == grpc.StatusCode.UNAVAILABLE
        info = details(ended)
        assert info["reason"] == "SHUTTING_DOWN"
        assert info["metadata"]["resume_token"] == w.last_token
        await stopping
        assert time.monotonic() - started < 10


@pytest.fixture(scope="module")
def postgresql_url() -> Iterator[str]:
    """Replicas share a PostgreSQL database (required in CI, like every PostgreSQL test)."""
    yield from postgres_database()


async def test_a_watcher_on_one_replica_sees_writes_through_another(postgresql_url) -> None:
    async with (
        own_server(postgresql_url) as one,
        own_server(postgresql_url) as two,
        stub_of(one) as on_one,
        stub_of(two) as on_two,
    ):
        w = Watch(on_one)
        await asyncio.sleep(0.3)
        for i in range(5):
            started = time.monotonic()
            c = await customer(on_two, f"r{i}")
            event = (await w.next()).event
            assert event.event.customer.id == c.id
            assert time.monotonic() - started < 1.0
        await w.close()


async def test_polling_delivers_when_notifications_are_lost(postgresql_url) -> None:
    async with (
        own_server(postgresql_url) as deaf,
        own_server(postgresql_url) as other,
        stub_of(deaf) as on_deaf,
        stub_of(other) as on_other,
    ):
        listener = deaf.broker.listener
        assert listener is not None
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        w = Watch(on_deaf)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        c = await customer(on_other)
        assert (await w.next()).event.event.customer.id == c.id
        assert time.monotonic() - started < 1.0
        await w.close()


async def test_a_late_commit_is_delivered_in_commit_order(stub, watch, server) -> None:
    """A transaction that began writing first but commits last is neither skipped nor
    delivered before what committed ahead of it."""
    w = await watch()
    engine = create_engine(server.database.url)
    holding, release = threading.Event(), threading.Event()
    late = Customer(id="late", name="late")

    def slow_writer() -> None:
        with Session(engine) as session, session.begin():
            now = datetime.now(UTC)
            built = notifications.header("customer", Change.UPDATE, now, ["name"])
            outbox.record(
                session,
                event_type=built.event_type,
                resource_id=late.id,
                event_time=now,
                body=wire.event(built, "customer", late.SerializeToString()),
            )
            outbox.flush(session)
            holding.set()
            release.wait(WAIT)

    loop = asyncio.get_running_loop()
    writing = loop.run_in_executor(None, slow_writer)
    await asyncio.to_thread(holding.wait, WAIT)
    quick = asyncio.create_task(customer(stub, "quick"))
    await asyncio.sleep(0.5)
    assert not quick.done()  # it waits for the late transaction instead of passing it
    release.set()
    await writing
    created = await quick
    events = await w.events(2)
    assert [e.event.WhichOneof("resource") for e in events] == ["customer", "customer"]
    assert [e.event.customer.id for e in events] == ["late", created.id]
    assert int(events[0].event_id) < int(events[1].event_id)
    engine.dispose()
