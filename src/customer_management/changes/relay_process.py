"""The relay's process: the server starts it (`python -m customer_management.cli.relay`),
wakes it on every commit and reads back what it reports. Building and publishing
envelopes so costs the server's event loop nothing but a write to a pipe per commit, and
runs on another core, at a lower priority (cli/relay.py): under full load the calls come
first.

- Server → relay (its stdin): a byte whenever events may have committed. End of file
  means the server has stopped or died: the relay saves its position, frees its lease
  and exits, so a killed server leaves no relay behind.
- Relay → server (its stdout): a JSON line with its state whenever that changes.
- The server starts it again (with backoff) if it exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from customer_management.changes.cloud_events import ContentMode
from customer_management.changes.relay import Relay, RelaySettings, RelayState, measure_lag
from customer_management.store.database import Database

log = logging.getLogger(__name__)
REPORT_EVERY = 0.25
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
ENTRY = "customer_management.cli.relay"
"""The module that runs the relay's process (cli: it sets logging up as the server does)."""
STOP_WITHIN = 10.0
"""Seconds the relay's process gets to save its position and exit at a stop."""


class RelayProcess:
    """The server's side: starts, wakes and watches the relay's process. It follows the
    broker (see broker.Follower), which hands it every commit's events."""

    def __init__(
        self,
        database: Database,
        settings: RelaySettings,
        *,
        log_level: str,
        log_format: str,
    ) -> None:
        self.database = database
        self.settings = settings
        self.state = RelayState()
        self._arguments = json.dumps(
            {
                "database_url": database.url.render_as_string(hide_password=False),
                "settings": {**asdict(settings), "content_mode": settings.content_mode.value},
                "log_level": log_level,
                "log_format": log_format,
            }
        )
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_due = False
        self._stopping = False

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise()),
            asyncio.create_task(measure_lag(self.database, self.settings.stream, self.state)),
        ]

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()  # end of file: save, free the lease, exit
            try:
                await asyncio.wait_for(process.wait(), STOP_WITHIN)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # broker.Follower: every commit (this process's at once, others' as read) wakes it.

    def apply(self, events: Iterable[Any]) -> None:
        if not self._wake_due:
            self._wake_due = True
            asyncio.get_running_loop().call_soon(self._wake)

    def caught_up(self, since: float) -> None:
        pass

    def reset(self) -> None:
        pass

    def _wake(self) -> None:
        """One byte per turn of the loop, however many commits it saw."""
        self._wake_due = False
        process = self._process
        if process is not None and process.stdin is not None and process.returncode is None:
            with contextlib.suppress(Exception):  # exiting: it is started again
                process.stdin.write(b"w")

    async def _supervise(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._stopping:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    ENTRY,
                    self._arguments,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                assert self._process.stdout is not None
                async for line in self._process.stdout:
                    with contextlib.suppress(ValueError, KeyError, TypeError):  # not a report
                        reported = json.loads(line)
                        self.state.leader = bool(reported["leader"])
                        self.state.connected = bool(reported["connected"])
                        self.state.published = int(reported["published"])
                        backoff = FIRST_BACKOFF
                code: int | str = await self._process.wait()
            except Exception as error:  # it could not even start: try again
                code = str(error) or type(error).__name__
            self.state.leader = self.state.connected = False
            if self._stopping:
                return
            log.warning("the relay's process exited (%s); starting it again", code)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


async def run(arguments: dict[str, Any]) -> None:
    """The relay's process: relays until its stdin ends."""
    database = Database(arguments["database_url"], pool_size=2)
    given = arguments["settings"]
    settings = RelaySettings(**{**given, "content_mode": ContentMode(given["content_mode"])})
    relay = Relay(database, settings)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    reporting = asyncio.create_task(_report(relay.state))
    await relay.start()
    try:
        while await stdin.read(4096):
            relay.wake.set()
    finally:
        reporting.cancel()
        await relay.stop()
        await asyncio.to_thread(database.close)


async def _report(state: RelayState) -> None:
    last = None
    while True:
        now = {"leader": state.leader, "connected": state.connected, "published": state.published}
        if now != last:
            sys.stdout.write(json.dumps(now) + "\n")
            sys.stdout.flush()
            last = now
        await asyncio.sleep(REPORT_EVERY)
