"""Delivers hub notifications: each listener's events from the durable change stream,
POSTed to its callback in order, at least once.

Every listener is leased to one replica at a time (renewed while it runs), so its
notifications leave in order even when several replicas share the database. A
listener's stream resumes from the position stored after its last delivery; a failed
POST is retried with exponential backoff for as long as it fails, and only that
listener waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from google.protobuf import json_format

from customer_management.changes.hubs import FAILING_AFTER, Hubs, Listener
from customer_management.changes.watching import Watching
from customer_management.domain.errors import DomainError
from customer_management.domain.notifications import tmf_name
from tmf629.v1.events_pb2 import Event, WatchEventsRequest

log = logging.getLogger(__name__)
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 60.0
SAVE_EVERY = 5.0
"""Seconds between position saves while a listener skips events it does not want."""
POST_TIMEOUT = 10.0
RECENT = 1024
"""Notifications kept for the listeners sending them (one per recent event)."""


class Dispatcher:
    def __init__(
        self,
        hubs: Hubs,
        watching: Watching,
        *,
        claim_interval: float = 5.0,
        lease: float = 30.0,
    ) -> None:
        self.hubs = hubs
        self.watching = watching
        self.claim_interval = claim_interval
        self.lease = timedelta(seconds=lease)
        self.owner = uuid.uuid4().hex
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._claiming: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT))
        self._claiming = asyncio.create_task(self._claim())

    async def stop(self) -> None:
        tasks = [*self._deliveries.values(), *([self._claiming] if self._claiming else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._deliveries.clear()
        with contextlib.suppress(Exception):  # a lapsed lease frees them anyway
            await self.hubs.release(self.owner)
        if self._http is not None:
            await self._http.close()

    async def _claim(self) -> None:
        """Takes free listeners, renews the leases held and starts or ends deliveries."""
        while True:
            try:
                held = {
                    listener.id: listener
                    for listener in await self.hubs.claim(self.owner, self.lease)
                }
                for id, task in list(self._deliveries.items()):
                    if id not in held or task.done():
                        task.cancel()
                        del self._deliveries[id]
                for id, listener in held.items():
                    if id not in self._deliveries:
                        self._deliveries[id] = asyncio.create_task(self._deliver(listener))
            except Exception:
                log.exception("claiming hub listeners failed; trying again")
            await asyncio.sleep(self.claim_interval)

    async def _deliver(self, listener: Listener) -> None:
        token = listener.resume_token
        saved_at = _clock()
        backoff = FIRST_BACKOFF
        while True:
            request = WatchEventsRequest(
                event_types=sorted(listener.interest.event_types),  # type: ignore[arg-type]
                resume_token=token,
            )
            try:
                async with contextlib.aclosing(self.watching.watch(request)) as stream:
                    async for response in stream:
                        token = response.resume_token
                        if response.HasField("event"):
                            event = response.event
                            note = self._notification(event)
                            resource = next(iter(note["event"].values()))
                            if listener.interest.wants(event.event_type, resource):
                                if not await self._hand_over(listener, note, token):
                                    return  # the lease went to another replica
                                saved_at = _clock()
                        if _clock() - saved_at > SAVE_EVERY:
                            if not await self.hubs.delivered(listener, self.owner, token, None):
                                return
                            saved_at = _clock()
                        backoff = FIRST_BACKOFF
            except DomainError as error:
                # The stream ended (a slow watcher, a shutdown, an expired position):
                # count it and resume from the last position.
                if await self.hubs.failed(listener, self.owner, str(error)) is None:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _hand_over(self, listener: Listener, note: dict[str, Any], token: str) -> bool:
        """POSTs one notification and records its position; False when the lease is lost.
        A stop lets a hand-over under way finish (for up to POST_TIMEOUT): one the
        callback took is recorded, so a graceful restart sends nothing twice."""

        async def hand_over() -> bool:
            if not await self._post(listener, note):
                return False
            return await self.hubs.delivered(listener, self.owner, token, datetime.now(UTC))

        step = asyncio.create_task(hand_over())
        try:
            return await asyncio.shield(step)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(step, POST_TIMEOUT)
            raise

    def _notification(self, event: Event) -> dict[str, Any]:
        """The notification of an event, built once and shared by every listener that
        sends it (none changes it), as WatchEvents shares its responses."""
        note = self._recent.get(event.event_id)
        if note is None:
            note = self._recent[event.event_id] = notification(event)
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        return note

    async def _post(self, listener: Listener, note: dict[str, Any]) -> bool:
        """POSTs until the callback takes it (2xx); False when the lease is lost."""
        assert self._http is not None
        backoff = FIRST_BACKOFF
        while True:
            try:
                self.hubs.check_callback(listener.callback)  # the allowed hosts may change
                async with self._http.post(
                    listener.callback, json=note, allow_redirects=False
                ) as answer:
                    if 200 <= answer.status < 300:
                        return True
                    error = f"the callback answered HTTP {answer.status}"
            except DomainError as refused:
                error = refused.message
            except (aiohttp.ClientError, TimeoutError) as failure:
                error = f"the callback is unreachable ({type(failure).__name__})"
            failures = await self.hubs.failed(listener, self.owner, error)
            if failures is None:
                return False
            if failures == FAILING_AFTER:
                log.warning(
                    "hub listener %s is failing: %d deliveries in a row failed, the last as %s",
                    listener.id,
                    failures,
                    error,
                )
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, MAX_BACKOFF)


def notification(event: Event) -> dict[str, Any]:
    """TMF's v2 notification: `eventId`, `eventTime`, `eventType` and `event` holding the
    resource under its name (`customer`, `customerAccount`, `paymentMean`)."""
    # Protobuf's JSON names are TMF's (a fixed decision), so this is TMF JSON.
    payload = json_format.MessageToDict(event.event)
    return {
        "eventId": event.event_id,
        "eventTime": event.event_time.ToJsonString(),
        "eventType": tmf_name(event.event_type),
        "event": payload,
    }


def _clock() -> float:
    return asyncio.get_running_loop().time()
