"""The relay to NATS JetStream (`--publish-nats`): every event of the outbox, in commit
order, published once into a JetStream stream as a CloudEvent (see cloud_events.py and
docs/relay.md). It runs in a process of its own (relay_process.py), so that building and
publishing envelopes takes nothing from the server's event loop.

Exactly once into the stream:
- the position (the last event JetStream acknowledged) is kept in the database and
  moves only after the acknowledgement;
- every message carries `Nats-Msg-Id` = event id, so JetStream drops a republish of the
  events acknowledged after the last save (within the stream's duplicate window);
- on taking over, the relay reads back from the stream's end the events of ours it
  already holds after the saved position, and goes on after the last of them that
  follows the position with no gap, so a republish after a long outage never relies on
  that window, and an event the stream refused is never skipped for a later one it took.

One relay among replicas: the relay is leased to one replica at a time (renewed every
second, LEASE seconds long), and only the holder publishes or moves the position; when
it dies another takes over once the lease lapses.

Broker down: the service goes on serving; the relay retries with backoff and resumes
from its position, in order. Its lag (events not relayed, age of the oldest) is measured
by every replica (`measure_lag`) for the metrics and the `relay` health name, which turns
NOT_SERVING without touching the service's own health.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError

from customer_management.changes import cloud_events
from customer_management.changes.cloud_events import ContentMode
from customer_management.changes.watching import event_of
from customer_management.domain.errors import DomainError
from customer_management.store import outbox, relays
from customer_management.store.database import Database
from customer_management.store.outbox import StoredEvent

log = logging.getLogger(__name__)
LEASE = 5.0
"""Seconds a relay's lease lasts: how long a dead relay delays the next one."""
RENEW_EVERY = 1.0
MAX_BATCH = 512
"""Events published before waiting for their acknowledgements."""
ACK_TIMEOUT = 10.0
"""Seconds a batch's acknowledgements may take before the connection counts as lost."""
SAVE_EVERY = 0.25
"""Seconds between position saves while events keep coming (a quiet relay saves at once)."""
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
LINGER = 0.005
"""Seconds a woken relay waits before it reads, for the commits right behind."""
CATCH_UP_LIMIT = 10_000
"""Messages at most read back from the stream's end on taking over."""
POLL_EVERY = 1.0
"""Seconds between outbox reads when no commit has woken the relay (a lost wake-up)."""
MEASURE_EVERY = 2.0
STALE_AFTER = 30.0
"""An unrelayed event older than this makes the `relay` health NOT_SERVING on every replica."""


@dataclass(frozen=True)
class RelaySettings:
    url: str
    stream: str
    subject_prefix: str
    content_mode: ContentMode
    duplicate_window: float
    """Seconds; used when the relay creates the stream."""
    source: str
    """The CloudEvents `source`: the service's base URL."""


@dataclass
class RelayState:
    """What the metrics and health report of the relay."""

    leader: bool = False
    connected: bool = False
    published: int = 0
    lag_events: int = 0
    oldest_age: float = 0.0
    """Seconds since the oldest unrelayed event was committed (0 when none)."""

    @property
    def healthy(self) -> bool:
        # Late events are unhealthy on every replica, the relaying one too: connected
        # as it is, it may be held at an event the stream refuses.
        late = self.lag_events > 0 and self.oldest_age >= STALE_AFTER
        return not late and (self.connected or not self.leader)


class LeaseLost(Exception):
    pass


class NotAcknowledged(Exception):
    """JetStream did not acknowledge an event: the relay publishes again from it."""


class Relay:
    def __init__(self, database: Database, settings: RelaySettings) -> None:
        self.database = database
        self.settings = settings
        self.wake = asyncio.Event()
        """Set when events may have committed (relay_process.py sets it)."""
        self.state = RelayState()
        self.owner = uuid.uuid4().hex
        self._held_until = 0.0
        """Loop time until which the lease is surely ours (renewed with a margin)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._acked: relays.Position | None = None
        self._ahead: set[int] = set()
        """Events after the position that the stream holds already (acknowledged while
        an earlier one was not): not published again."""

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._lead())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._acked is not None:  # it relayed: what was acknowledged is saved (if still
            with contextlib.suppress(Exception):  # its lease), and the lease freed
                await self._save()
            with contextlib.suppress(Exception):  # (a lapsed lease frees it anyway)
                await self.database.write(
                    lambda session, _: relays.release(session, self.settings.stream, self.owner)
                )

    # The lease

    async def _claim(self) -> relays.Position | None:
        now = datetime.now(UTC)
        until = now + timedelta(seconds=LEASE)
        asked = asyncio.get_running_loop().time()
        position = await self.database.write(
            lambda session, _: relays.claim(session, self.settings.stream, self.owner, now, until)
        )
        if position is not None:
            self._held_until = asked + LEASE - RENEW_EVERY
        return position

    async def _lead(self) -> None:
        """Holds (or waits for) the lease, and relays while it is held."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                position = await self._claim()
            except Exception as error:
                log.debug("cannot claim the relay's lease: %s", error)
                position = None
            if position is None:
                self.state.leader = False
                await asyncio.sleep(RENEW_EVERY)
                continue
            log.info("relaying events to NATS stream %s", self.settings.stream)
            self.state.leader = True
            self._acked = position
            relaying = asyncio.create_task(self._relay())
            try:
                while not relaying.done():
                    await asyncio.wait({relaying}, timeout=RENEW_EVERY)
                    with contextlib.suppress(Exception):  # a failed renewal: _held_until says
                        if not relaying.done() and await self._claim() is None:
                            break
                    if loop.time() > self._held_until:
                        break
            finally:
                relaying.cancel()
                await asyncio.gather(relaying, return_exceptions=True)
                self.state.leader = self.state.connected = False
            log.info("no longer relaying to NATS stream %s: the lease went", self.settings.stream)

    # Publishing

    async def _relay(self) -> None:
        """Connects, publishes from the position on, and on any failure reconnects with
        backoff and goes on from the last acknowledged event."""
        backoff = FIRST_BACKOFF
        failing = False
        taking_over = True  # until the first set-up: later ones go on from our own acks
        while True:
            connection: Any = None
            try:
                connection = await nats.connect(
                    self.settings.url,
                    allow_reconnect=False,
                    connect_timeout=2,
                    error_cb=_quiet,
                    closed_cb=_quiet_closed,
                    disconnected_cb=_quiet_closed,
                )
                stream = connection.jetstream(timeout=ACK_TIMEOUT)
                info = await self._set_up(stream)
                if taking_over:
                    await self._catch_up(stream, info)
                    taking_over = False
                if failing:
                    log.warning("NATS answers again: relaying resumes")
                failing, backoff = False, FIRST_BACKOFF
                self.state.connected = True
                await self._publish(stream)
            except (LeaseLost, asyncio.CancelledError):
                raise
            except Exception as error:
                self.state.connected = False
                with contextlib.suppress(Exception):  # what was acknowledged stays so
                    await self._save()
                if not failing:  # once per outage, not once per retry
                    log.warning(
                        "cannot relay events to NATS at %s (%s); retrying with backoff",
                        self.settings.url,
                        _why(error),
                    )
                failing = True
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _set_up(self, stream: JetStreamContext) -> StreamInfo:
        """Creates the stream if missing, else uses it as it is."""
        name = self.settings.stream
        try:
            return await stream.stream_info(name)
        except NotFoundError:
            info = await stream.add_stream(
                StreamConfig(
                    name=name,
                    subjects=[f"{self.settings.subject_prefix}.>"],
                    duplicate_window=self.settings.duplicate_window,
                )
            )
            log.info("created NATS stream %s for %s.>", name, self.settings.subject_prefix)
            return info

    async def _catch_up(self, stream: JetStreamContext, info: StreamInfo) -> None:
        """On taking over: the events after the position that a relay which died before
        saving had already published, read back from the stream's end, are not published
        again (`_ahead`); the position moves through them as far as they follow it with
        no gap, so an event the stream refused while it took later ones is published."""
        assert self._acked is not None
        acked = self._acked
        name = self.settings.stream
        held: set[int] = set()
        seq, read = info.state.last_seq, 0
        while seq >= max(1, info.state.first_seq) and read < CATCH_UP_LIMIT:
            try:
                message = await stream.get_msg(name, seq=seq)
            except NotFoundError:  # deleted from the stream
                seq -= 1
                continue
            seq, read = seq - 1, read + 1
            headers = message.headers or {}
            history = headers.get(cloud_events.HISTORY_HEADER)
            published = headers.get(cloud_events.MSG_ID, "")
            if history is None or not published.isdigit():
                continue  # not the relay's
            if history != acked.history_id or int(published) <= acked.seq:
                break  # the saved position, or an older database's events: no further
            held.add(int(published))
        self._ahead = held
        if held:
            log.info("NATS stream %s already holds %d events after %d", name, len(held), acked.seq)

    async def _publish(self, stream: JetStreamContext) -> None:
        """Publishes the outbox's events after the position, batch by batch, each batch
        acknowledged before the next; saves the position at most every SAVE_EVERY."""
        assert self._acked is not None
        history_id = self._acked.history_id
        loop = asyncio.get_running_loop()
        saved_at = loop.time()
        unsaved = False
        while True:
            self.wake.clear()  # before the read: a commit after it wakes the next wait
            after = self._acked.seq
            page = await self.database.read(
                functools.partial(outbox.after, seq=after, limit=MAX_BATCH)
            )
            if page.pruned_through > after:
                log.error(
                    "events %d to %d were pruned before the relay published them",
                    after + 1,
                    page.pruned_through,
                )
                self._acked = relays.Position(history_id, page.pruned_through)
                continue
            if not page.events:
                wait = SAVE_EVERY - (loop.time() - saved_at) if unsaved else POLL_EVERY
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), max(0.0, wait))
                    # Woken by a commit: let the commits right behind it join the batch,
                    # so a busy service costs a read and a round trip per batch, not per
                    # commit.
                    await asyncio.sleep(LINGER)
                if unsaved and loop.time() - saved_at >= SAVE_EVERY:
                    await self._save()  # quiet: the position is saved now
                    saved_at, unsaved = loop.time(), False
                continue
            if loop.time() > self._held_until:
                raise LeaseLost()
            taken, failure = await self._publish_batch(stream, page.events, history_id)
            if taken:
                self._acked = relays.Position(history_id, page.events[taken - 1].seq)
                self.state.published += taken
                unsaved = True
            if failure is not None:
                raise NotAcknowledged(failure)
            if loop.time() - saved_at >= SAVE_EVERY:
                await self._save()
                saved_at, unsaved = loop.time(), False

    async def _publish_batch(
        self, stream: JetStreamContext, events: list[StoredEvent], history_id: str
    ) -> tuple[int, str | None]:
        """Publishes a page of events, skipping those the stream already holds, and
        waits for their acknowledgements. Returns how many of the first events the stream
        now holds, with no gap, and why the next one is not (None when all are): it is
        published again, and the acknowledged ones after it are remembered (`_ahead`) so
        that they are not, whatever the duplicate window."""
        acks: dict[int, asyncio.Future[Any]] = {}
        for stored in events:
            if stored.seq in self._ahead:
                continue
            built = cloud_events.message(
                event_of(stored),
                prefix=self.settings.subject_prefix,
                source=self.settings.source,
                history_id=history_id,
                mode=self.settings.content_mode,
            )
            acks[stored.seq] = await stream.publish_async(
                built.subject, built.body, headers=built.headers, stream=self.settings.stream
            )
        if acks:
            # nats-py 2.16 leaves a refused publish's future unanswered (its refusal goes
            # to error_cb, nats-io/nats.py#985): the wait then ends at ACK_TIMEOUT.
            await asyncio.wait(acks.values(), timeout=ACK_TIMEOUT)

        def held(seq: int) -> bool:
            ack = acks.get(seq)  # none: in `_ahead`, held already
            return ack is None or (ack.done() and not ack.cancelled() and ack.exception() is None)

        taken = sum(1 for _ in itertools.takewhile(lambda stored: held(stored.seq), events))
        failure = None
        if taken < len(events):
            ack = acks[events[taken].seq]
            why = ack.exception() if ack.done() and not ack.cancelled() else "no answer in time"
            failure = f"event {events[taken].seq} was not acknowledged ({why})"
            self._ahead.update(stored.seq for stored in events[taken + 1 :] if held(stored.seq))
            for ack in acks.values():
                ack.cancel()  # a late acknowledgement is not waited for
        if taken:
            last = events[taken - 1].seq
            self._ahead = {seq for seq in self._ahead if seq > last}
        return taken, failure

    async def _save(self) -> None:
        acked = self._acked
        if acked is None:
            return
        now = datetime.now(UTC)
        held = await self.database.write(
            lambda session, _: relays.advance(
                session, self.settings.stream, self.owner, acked.seq, now
            )
        )
        if not held:
            raise LeaseLost()


async def _quiet(error: Exception) -> None:
    if isinstance(error, APIError):  # JetStream refused a message: the operator must know
        log.warning("NATS JetStream: %s", error)
    else:  # connection trouble, which the relay reports once per outage
        log.debug("NATS: %s", error)


async def _quiet_closed() -> None:
    pass


def _why(error: BaseException) -> str:
    if isinstance(error, DomainError):
        return error.message
    return str(error) or type(error).__name__


async def measure_lag(database: Database, stream: str, state: RelayState) -> None:
    """Every MEASURE_EVERY seconds, how far the stream's relay is behind (for the metrics
    and the `relay` health name); a warning when it falls behind, and when it is back."""
    healthy = True
    while True:
        try:
            lag = await database.read(lambda session: relays.lag(session, stream))
            if lag is not None:
                state.lag_events = lag.events
                oldest = lag.oldest
                state.oldest_age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        except Exception as error:
            log.debug("cannot measure the relay's lag: %s", error)
        if state.healthy != healthy:
            healthy = state.healthy
            if healthy:
                log.warning("the NATS relay has caught up")
            else:
                log.warning(
                    "the NATS relay is behind: %d events, the oldest %.0f s old",
                    state.lag_events,
                    state.oldest_age,
                )
        await asyncio.sleep(MEASURE_EVERY)


def warn_if_held_back(
    positions: list[Any], relaying: set[str], latest: int, retention: timedelta
) -> None:
    """At start-up: a relay that is not running here, with events waiting since longer
    than the retention (`latest` is the newest event), keeps them from being pruned."""
    now = datetime.now(UTC)
    for row in positions:
        if row.stream not in relaying and row.seq < latest and now - row.relayed_time > retention:
            log.warning(
                "the NATS relay to stream %s has not run for longer than the event retention"
                " (%s): the %d events it has not published are kept for it, and the outbox"
                " grows until it runs again (start with --publish-nats) or its position is"
                " removed (docs/relay.md)",
                row.stream,
                retention,
                latest - row.seq,
            )
