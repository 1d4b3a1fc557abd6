"""Small helpers for reading rich errors and building resources in tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

DATA = Path(__file__).with_name("data")


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """ErrorInfo reason and the field paths / subjects of an error's google.rpc.Status."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"no google.rpc.Status in {error}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    out: dict[str, Any] = {"fields": [], "subjects": [], "reason": None}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                if isinstance(message, error_details_pb2.ErrorInfo):
                    out["reason"] = message.reason
                    out["domain"] = message.domain
                    out["metadata"] = dict(message.metadata)
                elif isinstance(message, error_details_pb2.BadRequest):
                    out["fields"] = [v.field for v in message.field_violations]
                else:
                    out["subjects"] = [v.subject for v in message.violations]
    return out


def seed(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def parse(message_type: type, data: dict[str, Any]) -> Any:
    return json_format.ParseDict(data, message_type())


async def fails(call: Any, code: grpc.StatusCode) -> dict[str, Any]:
    """Awaits a call that must fail with `code`; returns its error details."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, f"{error.code()} {error.details()}"
        return details(error)
    raise AssertionError(f"the call succeeded; expected {code}")


async def rpc_outcome(stub: Any, method: Any, metadata: Any = ()) -> grpc.StatusCode:
    """The status of calling `method` (a MethodDescriptor) with an empty request; a
    stream is read up to its first message (WatchEvents asks for the initial state)."""
    import asyncio

    from google.protobuf.message_factory import GetMessageClass

    request = GetMessageClass(method.input_type)()
    if method.name == "WatchEvents":
        request.initial_state = True
    call = getattr(stub, method.name)(request, metadata=metadata, timeout=10)
    try:
        if method.server_streaming:
            await asyncio.wait_for(call.read(), 10)
            call.cancel()
        else:
            await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def own_stub(database_url: str, **settings: Any) -> AsyncIterator[Any]:
    """A server of the test's own, for settings the shared one does not have, and its stub."""
    from customer_management.config import Config
    from customer_management.server import Server
    from tmf629.v1 import service_pb2_grpc

    server = Server(Config(port=0, database_url=database_url, **settings))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield service_pb2_grpc.CustomerManagementServiceStub(channel)
    finally:
        await server.stop(grace=1)


async def latest_token(server: Any) -> str:
    """The stream's position now: a watch resuming from it sees every change made after
    this call, whereas "from now" starts only when the call reaches the server."""
    from customer_management.changes.watching import token
    from customer_management.store import outbox

    history = await server.database.read(outbox.history)
    return token(history.id, history.latest)
