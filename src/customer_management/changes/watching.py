"""WatchEvents: every committed change in commit order, from now or from a resume token,
optionally after a consistent snapshot of the current state.

A stream first catches up from the outbox, then switches to the broker's live feed at
a point where neither can skip an event; every response carries the position it
reached as its resume token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from customer_management.changes.broker import (
    Broker,
    Closed,
    Ended,
    Subscription,
    WatchersFull,
)
from customer_management.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from customer_management.domain.notifications import EVENT_TYPES, KIND_OF_TYPE
from customer_management.domain.service import ResourceService
from customer_management.domain.validation import key_problem
from customer_management.store import outbox, resources
from customer_management.store.database import Database
from customer_management.store.errors import StreamStalled
from customer_management.store.outbox import StoredEvent
from tmf629.v1.events_pb2 import (
    Event,
    EventPayload,
    Heartbeat,
    SnapshotComplete,
    WatchEventsRequest,
    WatchEventsResponse,
)

MAX_IDS = 1000
PAGE = 500
RECENT = 4096
"""Responses kept for the watchers that are sending them (one per recent event)."""


@dataclass(frozen=True)
class Spec:
    """A validated WatchEvents request."""

    event_types: frozenset[int]
    ids: frozenset[str]
    resume_from: tuple[str, int] | None
    initial_state: bool

    def matches(self, event: StoredEvent) -> bool:
        return (not self.event_types or event.event_type in self.event_types) and (
            not self.ids or event.resource_id in self.ids
        )

    @property
    def kinds(self) -> list[str]:
        wanted = {KIND_OF_TYPE[t] for t in self.event_types} or set(EVENT_TYPES)
        return [kind for kind in EVENT_TYPES if kind in wanted]


def token(history_id: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{history_id}:{seq}".encode()).decode().rstrip("=")


def _untoken(value: str) -> tuple[str, int]:
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        history_id, seq = text.split(":")
        if not seq.isdigit():
            raise ValueError(seq)
        return history_id, int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        problem = "is not a token this service issued"
        raise InvalidArgument(
            f"resume_token {problem}",
            reason="INVALID_RESUME_TOKEN",
            violations=[FieldViolation("resume_token", problem)],
        ) from None


def parse(request: WatchEventsRequest) -> Spec:
    violations = []
    for i, event_type in enumerate(request.event_types):
        if event_type not in KIND_OF_TYPE:
            violations.append(FieldViolation(f"event_types[{i}]", "is not an event type"))
    if len(request.resource_ids) > MAX_IDS:
        violations.append(FieldViolation("resource_ids", f"has more than {MAX_IDS} ids"))
    for i, id in enumerate(request.resource_ids[:MAX_IDS]):
        if problem := "is required" if not id else key_problem(id):
            violations.append(FieldViolation(f"resource_ids[{i}]", problem))
    if request.initial_state and request.resume_token:
        violations.append(
            FieldViolation("initial_state", "starts a new stream; it cannot resume one")
        )
    if violations:
        raise InvalidArgument("the request has invalid fields", violations=violations)
    return Spec(
        event_types=frozenset(request.event_types),
        ids=frozenset(request.resource_ids),
        resume_from=_untoken(request.resume_token) if request.resume_token else None,
        initial_state=request.initial_state,
    )


class Watching:
    def __init__(
        self,
        database: Database,
        broker: Broker,
        services: Sequence[ResourceService[Any]],
    ) -> None:
        self.database = database
        self.broker = broker
        self.services = {service.kind.kind: service for service in services}
        self._recent: OrderedDict[int, WatchEventsResponse] = OrderedDict()

    async def watch(self, request: WatchEventsRequest) -> AsyncGenerator[WatchEventsResponse]:
        spec = parse(request)
        # Subscribed first: the slot is taken, and the live feed buffers from here on.
        subscription = self._subscribe(spec)
        try:
            history = await self.database.read(outbox.history)
            last = history.latest
            if spec.resume_from is not None:
                last = _resumable(spec.resume_from, history)
            if spec.initial_state:
                async with contextlib.aclosing(self._snapshot(spec, subscription)) as snapshot:
                    async for item in snapshot:
                        last = item.position
                        yield item.message
            # Events up to where the live feed starts come from the outbox; the live
            # feed buffers what commits meanwhile, and what both hold is sent once.
            async with contextlib.aclosing(self._history(last, subscription.start)) as history_:
                async for event in history_:
                    last = event.seq
                    if spec.matches(event):
                        yield self._event(event)
            async with contextlib.aclosing(self._live(subscription, last)) as live:
                async for response in live:
                    yield response
        finally:
            self.broker.unsubscribe(subscription)

    async def now_token(self) -> str:
        """The token of the stream's position now: resuming from it sends every change
        committed after this moment."""
        history = await self.database.read(outbox.history)
        return self._token(history.latest)

    async def _history(self, after: int, until: int) -> AsyncGenerator[StoredEvent]:
        """The outbox's events after `after` up to `until`, in commit order."""
        while after < until:
            page = await self.database.read(functools.partial(outbox.after, seq=after, limit=PAGE))
            if after < page.pruned_through:
                raise _expired(page.pruned_through)
            if not page.events:
                return  # the rest was deleted by hand: nothing left to send
            for event in page.events:
                if event.seq > until:
                    return
                yield event
            after = page.events[-1].seq

    def _subscribe(self, spec: Spec) -> Subscription:
        try:
            return self.broker.subscribe(spec.matches)
        except WatchersFull:
            raise _full() from None
        except Closed:
            raise self._shutting_down(None) from None

    def _shutting_down(self, last: int | None) -> Unavailable:
        """`last` is None before anything resumable was sent."""
        return Unavailable(
            "the server is shutting down; resume with the last token on another",
            reason="SHUTTING_DOWN",
            metadata={} if last is None else {"resume_token": self._token(last)},
        )

    async def _live(
        self, subscription: Subscription, last: int
    ) -> AsyncGenerator[WatchEventsResponse]:
        clock = asyncio.get_running_loop().time
        while True:
            while subscription.events:
                event = subscription.events.popleft()
                if event.seq > last:
                    last = event.seq
                    subscription.sent_at = clock()
                    yield self._event(event)
            if subscription.ended is Ended.OVERFLOW:
                raise ResourceExhausted(
                    "this watcher fell too far behind; resume with its last token",
                    reason="WATCHER_TOO_SLOW",
                    metadata={"resume_token": self._token(last)},
                )
            if subscription.ended is Ended.SHUTDOWN:
                raise self._shutting_down(last)
            if subscription.heartbeat_due:
                subscription.heartbeat_due = False
                # Every event up to the broker's position has been offered and sent.
                last = max(last, self.broker.position)
                subscription.sent_at = clock()
                yield WatchEventsResponse(resume_token=self._token(last), heartbeat=Heartbeat())
                continue
            subscription.wakeup.clear()
            await subscription.wakeup.wait()

    async def _snapshot(
        self, spec: Spec, subscription: Subscription
    ) -> AsyncGenerator[_Positioned]:
        services = self.services

        def read(session: Session) -> Iterator[_Positioned]:
            position = outbox.history(session).latest
            mark = self._token(position)
            for kind in spec.kinds:
                after = 0
                while rows := resources.scan(
                    session, kind, sorted(spec.ids), after_pk=after, limit=PAGE
                ):
                    for row in rows:
                        payload = EventPayload()
                        getattr(payload, kind).CopyFrom(services[kind].outputs.message(row))
                        yield _Positioned(
                            position, WatchEventsResponse(resume_token=mark, snapshot=payload)
                        )
                    after = rows[-1].pk
            yield _Positioned(
                position,
                WatchEventsResponse(resume_token=mark, snapshot_complete=SnapshotComplete()),
            )

        try:
            async with contextlib.aclosing(self.database.stream(read)) as stream:
                async for item in stream:
                    if subscription.ended is Ended.SHUTDOWN:
                        raise self._shutting_down(None)  # a cut snapshot is not resumable
                    yield item
        except StreamStalled:
            raise ResourceExhausted(
                "this watcher took nothing from its initial state for too long;"
                " start again with initial_state",
                reason="WATCHER_TOO_SLOW",
            ) from None

    def _event(self, stored: StoredEvent) -> WatchEventsResponse:
        """The response for an event; built once and shared by every watcher (none
        changes it), so fan-out costs one parse per event, not one per watcher."""
        response = self._recent.get(stored.seq)
        if response is None:
            event = event_of(stored)
            response = WatchEventsResponse(resume_token=self._token(stored.seq), event=event)
            self._recent[stored.seq] = response
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        return response

    def _token(self, seq: int) -> str:
        return token(self.broker.history_id, seq)


def event_of(stored: StoredEvent) -> Event:
    """A stored event as WatchEvents (and the NATS relay) send it: its id is its seq."""
    event = Event.FromString(stored.body)
    event.event_id = str(stored.seq)
    return event


@dataclass(frozen=True)
class _Positioned:
    position: int
    message: WatchEventsResponse


def _resumable(resume_from: tuple[str, int], history: outbox.History) -> int:
    history_id, seq = resume_from
    if history_id != history.id or seq > history.latest:
        raise FailedPrecondition(
            "resume_token is not from this service's event history",
            reason="RESUME_TOKEN_UNKNOWN",
        )
    if seq < history.pruned_through:
        raise _expired(history.pruned_through)
    return seq


def _expired(pruned_through: int) -> FailedPrecondition:
    return FailedPrecondition(
        "resume_token is older than the retained event history; start again from now"
        " (with initial_state to rebuild what you keep)",
        reason="RESUME_TOKEN_EXPIRED",
        metadata={"oldest_resumable": str(pruned_through)},
    )


def _full() -> ResourceExhausted:
    return ResourceExhausted(
        "every watcher slot of this server is taken; retry later or on another replica",
        reason="TOO_MANY_WATCHERS",
    )
