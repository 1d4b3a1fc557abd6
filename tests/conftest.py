"""A real server on port 0, over SQLite and PostgreSQL, and a grpc.aio channel to it."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text

from customer_management.config import Config
from customer_management.server import Server
from customer_management.store.models import Base
from tmf629.v1 import service_pb2_grpc

POSTGRES_ADMIN_URL = os.environ.get(
    "CM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"
NATS_URL = os.environ.get("CM_TEST_NATS_URL", "nats://127.0.0.1:4222")
HANG_REPORT_AFTER = float(os.environ.get("CM_TEST_HANG_REPORT", "600"))
"""Seconds after which a test still running prints its asyncio tasks' stacks (where each
awaits), before pytest-timeout fails it and prints only the threads' stacks."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    timer = threading.Timer(HANG_REPORT_AFTER, _print_tasks, args=(item.nodeid,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _print_tasks(nodeid: str) -> None:
    """Every task of every running event loop, with the line each awaits at. Read from
    another thread while the loop waits in select: good enough to find a hang."""
    gc.unfreeze()  # the server freezes what start-up built, and frozen objects are not listed
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    print(f"\n{nodeid} still runs after {HANG_REPORT_AFTER:g} s; its tasks:", file=sys.stderr)
    for loop in loops:
        if loop.is_running():
            for task in list(asyncio.all_tasks(loop)):
                print(f"{task!r}", file=sys.stderr)
                _print_awaits(task.get_coro())


def _print_awaits(coro: Any) -> None:
    """Each coroutine down the await chain, with its line: the innermost await is where
    the task is held. (Not task.print_stack: it shows only the outermost frame, and its
    linecache look-up fails on a compiled frame without a line number, which is how
    the report that was to name a CI hang printed nothing.)"""
    for _ in range(30):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            frame = getattr(coro, "gi_frame", None)
        if frame is None:
            print(f"  {coro!r}", file=sys.stderr)
            return
        code = frame.f_code
        print(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}", file=sys.stderr)
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "ag_await", None)
            or getattr(coro, "gi_yieldfrom", None)
        )
        if coro is None:
            return


def postgres_database() -> Iterator[str]:
    """A fresh database for the session, dropped at the end."""
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {error}")
        pytest.skip(f"PostgreSQL unreachable: {error}")
    name = f"cm_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def nats_url() -> str:
    """NATS with JetStream, for the relay tests: required in CI, else they skip without it."""
    host, port = NATS_URL.removeprefix("nats://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        if IN_CI:
            pytest.fail(f"NATS is required in CI but unreachable at {NATS_URL}: {error}")
        pytest.skip(f"NATS unreachable at {NATS_URL}: {error}")
    return NATS_URL


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    else:
        yield from postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own, for a server the test starts, stops or starves."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'own.db'}"
    else:
        yield from postgres_database()


@pytest_asyncio.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[Server]:
    running = Server(
        Config(
            port=0,
            database_url=database_url,
            base_url="https://cm.example/tmf",
            pool_size=8,
            http_port=0,
            hub_allowed_hosts="127.0.0.1",
            hub_claim_interval=0.2,
        )
    )
    await running.start()
    yield running
    await running.stop(grace=1)


@pytest_asyncio.fixture(scope="session")
async def channel(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> service_pb2_grpc.CustomerManagementServiceStub:
    return service_pb2_grpc.CustomerManagementServiceStub(channel)


KEPT_TABLES = {"event", "event_history"}


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> None:
    """Every test that talks to the server starts from empty tables."""
    if "server" not in request.fixturenames and "stub" not in request.fixturenames:
        return
    server: Server = request.getfixturevalue("server")
    with server.database.write_engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            # The event history stays: it only grows, as the running broker expects.
            if table.name not in KEPT_TABLES:
                connection.execute(table.delete())
    server.cache.clear()  # the rows went behind the service's back


@pytest.fixture
def sql(server: Server) -> Iterator[object]:
    """Reads the server's database directly (to check what is stored): a text query with
    its parameters, or an SQLAlchemy statement (read through the models' column types)."""
    engine = create_engine(server.database.url)
    with engine.connect() as connection:

        def query(statement: object, **params: object) -> list[object]:
            if isinstance(statement, str):
                statement = text(statement)
            return list(connection.execute(statement, params).all())  # type: ignore[call-overload]

        yield query
    engine.dispose()


DATA = Path(__file__).with_name("data")
