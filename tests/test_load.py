"""The mixed load of `make bench`, short: the same clients, watchers and report, on both
databases. No timing is asserted (CI machines are shared); what must hold at any speed
is asserted: no call fails and every acknowledged write reaches every watcher."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import create_engine, text

from benchmarks import load as bench_load
from benchmarks import run as bench
from customer_management.changes.watching import token
from customer_management.store import outbox
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.events_pb2 import WatchEventsRequest

HEARTBEAT = "0.5"
"""The server's --heartbeat-interval: short, so that heartbeats are many (the bench's
watchers count them with the events; the ids below leave them out)."""


class IdWatcher:
    """A watcher of the test's own beside the bench's, from the outbox's position when
    it starts: the id of every event it receives, in order; heartbeats only counted."""

    def __init__(self, target: str, url: str) -> None:
        self.target, self.url = target, url
        self.start_seq = 0
        self.ids: list[int] = []
        self.heartbeats = 0
        self.error: Exception | None = None
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._answered = threading.Event()

    def _database(self, statement: Any) -> Any:
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                return statement(connection)
        finally:
            engine.dispose()

    def start(self) -> None:
        history = self._database(outbox.history)
        self.start_seq = history.latest
        self._resume = token(history.id, history.latest)
        self._thread.start()
        assert self._answered.wait(10), f"the watcher had no answer: {self.error}"

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            watch = service_pb2_grpc.CustomerManagementServiceStub(channel).WatchEvents
            self._call = watch(WatchEventsRequest(resume_token=self._resume))
            self._answered.set()  # open (a refusal shows in `error`)
            try:
                for response in self._call:
                    if response.HasField("event"):
                        self.ids.append(int(response.event.event_id))
                    elif response.HasField("heartbeat"):
                        self.heartbeats += 1
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                    self.error = error

    def committed(self) -> list[int]:
        """The ids of every event committed after the start, in commit order."""
        return self._database(
            lambda c: list(
                c.execute(
                    text("SELECT seq FROM event WHERE seq > :after ORDER BY seq"),
                    {"after": self.start_seq},
                ).scalars()
            )
        )

    def stop(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self._thread.join(10)


@dataclass
class Watched:
    """What the test's watcher saw, checked once the bench's run is over."""

    delivered: list[int] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    heartbeats: int = 0
    error: Exception | None = None


def test_a_short_mixed_load_loses_nothing(own_database: str, tmp_path: Path) -> None:
    watched = Watched()

    @contextlib.contextmanager
    def serve(url: str, workdir: Path) -> Iterator[tuple[str, Any]]:
        with bench.server(url, workdir, "--heartbeat-interval", HEARTBEAT) as (target, process):
            watcher = IdWatcher(target, url)
            watcher.start()  # before the bench writes anything
            try:
                yield target, process
                # The bench's watchers have had their count: wait for ours to have every
                # committed event (nothing writes any more).
                watched.expected = watcher.committed()
                deadline = time.monotonic() + 30
                while watcher.ids != watched.expected and time.monotonic() < deadline:
                    if len(watcher.ids) >= len(watched.expected) or watcher.error:
                        break
                    time.sleep(0.2)
                time.sleep(3 * float(HEARTBEAT))  # quiet: heartbeats come, and no event
                watched.delivered = list(watcher.ids)
                watched.heartbeats, watched.error = watcher.heartbeats, watcher.error
            finally:
                watcher.stop()

    run = bench_load.load_run(
        "smoke",
        own_database,
        tmp_path,
        serve,
        watchers=10,
        minutes=0.2,
        max_seconds=3,
        share=0.8,
        quiet=True,
    )
    assert run.max_rps > 0 and run.calls > 0
    assert run.errors == {}, run.errors  # no call failed and no bench watcher was ended
    assert run.acknowledged_writes > 0
    # Every event committed while it watched, each once, in commit order, and no other
    # (heartbeats are not events); every acknowledged write made one of them (the
    # bench's pool and warm-up creates too).
    assert watched.error is None, watched.error
    missing = sorted(set(watched.expected) - set(watched.delivered))
    extra = sorted(set(watched.delivered) - set(watched.expected))
    assert (missing, extra) == ([], []), (len(missing), missing[:20], len(extra), extra[:20])
    assert watched.delivered == watched.expected  # and in order, each once
    assert len(watched.expected) >= bench_load.POOL + run.acknowledged_writes
    assert watched.heartbeats > 0  # there were heartbeats, and none counted as an event
    assert run.rss and run.minutes
    text_ = bench_load.report([run])
    assert "## Mixed load" in text_ and "| smoke |" in text_
