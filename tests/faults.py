"""A server in a process of its own, for the tests that kill it, stop it or starve it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tmf629.v1 import service_pb2_grpc

COMMAND = str(Path(sys.executable).with_name("customer-management"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`customer-management serve` on a fixed port, so a restart keeps its address."""

    def __init__(self, database_url: str, log: Path, *args: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.log = log
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, within: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                COMMAND, "serve", "--port", str(self.port), "--database-url", self.database_url,
                "--log-level", "WARNING", *self.args,
                stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        await self.wait_serving(within)

    async def wait_serving(self, within: float) -> None:
        deadline = asyncio.get_running_loop().time() + within
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.running, self.log.read_text()
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, self.log.read_text()
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    async def exited(self, within: float) -> int:
        """The exit status, which must come `within` seconds."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), within)

    async def stop(self) -> None:
        if self.running:
            await self.kill()


def stub(channel: grpc.aio.Channel) -> Any:
    return service_pb2_grpc.CustomerManagementServiceStub(channel)


class TcpProxy:
    """Forwards a local port to `upstream`; `cut` makes the upstream vanish (every
    connection reset, new ones refused, as when a database stops) until `restore`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        if self._server is None:  # cut while this one was connecting
            _reset(writer)
            _reset(up_writer)
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            self._writers.discard(sink)
            sink.close()

    async def cut(self) -> None:
        server, self._server = self._server, None
        assert server is not None
        server.close()
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()
        await server.wait_closed()

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self.cut()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with a TCP reset, as a connection to a process that died ends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
