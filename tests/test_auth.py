"""Who may call what: every RPC x {no token, wrong token, each scope}, health open,
unknown methods denied, and no listening beyond loopback without authentication."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customer_management.config import Config
from customer_management.server import Server
from helpers import rpc_outcome
from tmf629.v1 import service_pb2, service_pb2_grpc

TOKENS = {scope: f"token-for-{scope}" for scope in ("read", "write", "watch", "admin")}
METHODS = service_pb2.DESCRIPTOR.services_by_name["CustomerManagementService"].methods
NEEDS = {
    **{m.name: "read" for m in METHODS if m.name.startswith(("Get", "List"))},
    **{m.name: "write" for m in METHODS if m.name.startswith(("Create", "Update", "Delete"))},
    "VerifyCustomerAccountPin": "write",
    "WatchEvents": "watch",
}
DENIED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def tokens_file(path: Path) -> str:
    callers = [
        {
            "identity": f"{scope}-service",
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "scopes": [scope],
        }
        for scope, token in TOKENS.items()
    ]
    path.write_text(json.dumps({"callers": callers}))
    return str(path)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **settings: Any) -> AsyncIterator[Server]:
    server = Server(Config(port=0, database_url=f"sqlite:///{tmp_path / 'auth.db'}", **settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1)


async def outcome(stub: Any, method: Any, token: str | None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    return await rpc_outcome(stub, method, metadata)


async def test_authorization_matrix(tmp_path: Path) -> None:
    async with (
        running(tmp_path, tokens_file=tokens_file(tmp_path / "tokens.json")) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
        assert {m.name for m in METHODS} == set(NEEDS)
        for method in METHODS:
            needed = NEEDS[method.name]
            assert await outcome(stub, method, None) == grpc.StatusCode.UNAUTHENTICATED
            assert await outcome(stub, method, "wrong") == grpc.StatusCode.UNAUTHENTICATED
            for scope, token in TOKENS.items():
                code = await outcome(stub, method, token)
                if scope in (needed, "admin"):
                    assert code not in DENIED, (method.name, scope, code)
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (method.name, scope, code)
        # Health stays open; a method nobody is granted is denied, even to admin.
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        for name in ("/tmf629.v1.CustomerManagementService/Nope", "/other.Service/Call"):
            unknown = channel.unary_unary(name)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await unknown(b"", metadata=(("authorization", f"Bearer {TOKENS['admin']}"),))
            assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_no_listening_beyond_loopback_without_authentication(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SystemExit, match="without authentication"):
        Server(Config(port=0, host="0.0.0.0", database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    async with running(tmp_path) as server:
        assert "listening on loopback only" in caplog.text  # and says so at start-up
    async with running(tmp_path, host="0.0.0.0", insecure=True) as server:
        assert server.port
        assert "anyone who reaches 0.0.0.0" in caplog.text
    async with running(
        tmp_path, host="0.0.0.0", tokens_file=tokens_file(tmp_path / "t.json")
    ) as server:
        assert server.port


def test_a_bad_tokens_file_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"callers": [{"identity": "x", "token_sha256": "ab", "scopes": []}]}))
    with pytest.raises(SystemExit, match="tokens file"):
        Server(Config(port=0, database_url=f"sqlite:///{tmp_path / 'x.db'}", tokens_file=str(bad)))


async def test_resources_record_who_created_and_last_changed_them(tmp_path: Path) -> None:
    def bearer(scope: str) -> Any:
        return (("authorization", f"Bearer {TOKENS[scope]}"),)

    async with (
        running(tmp_path, tokens_file=tokens_file(tmp_path / "tokens.json")) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
        created = await stub.CreateCustomer(
            service_pb2.CreateCustomerRequest(customer={"name": "c"}), metadata=bearer("write")
        )
        assert (created.created_by, created.updated_by) == ("write-service", "write-service")
        same = service_pb2.UpdateCustomerRequest(customer={"id": created.id, "name": "c"})
        unchanged = await stub.UpdateCustomer(same, metadata=bearer("admin"))
        assert unchanged == created  # nothing changed, so nobody changed it
        change = service_pb2.UpdateCustomerRequest(customer={"id": created.id, "name": "d"})
        changed = await stub.UpdateCustomer(change, metadata=bearer("admin"))
        assert (changed.created_by, changed.updated_by) == ("write-service", "admin-service")
        got = await stub.GetCustomer(
            service_pb2.GetCustomerRequest(id=created.id), metadata=bearer("read")
        )
        assert got.updated_by == "admin-service"
    async with (
        running(tmp_path) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
        anonymous = await stub.CreateCustomer(
            service_pb2.CreateCustomerRequest(customer={"name": "a"})
        )
        assert anonymous.created_by == "anonymous"


async def test_every_mutation_writes_one_audit_line_without_personal_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="customer_management.audit")
    bearer = (("authorization", f"Bearer {TOKENS['admin']}"),)
    async with (
        running(tmp_path, tokens_file=tokens_file(tmp_path / "tokens.json")) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
        created = await stub.CreateCustomer(
            service_pb2.CreateCustomerRequest(customer={"name": "Jane Private"}), metadata=bearer
        )
        await stub.GetCustomer(service_pb2.GetCustomerRequest(id=created.id), metadata=bearer)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.DeleteCustomer(
                service_pb2.DeleteCustomerRequest(id=created.id, etag="99"), metadata=bearer
            )
        await stub.DeleteCustomer(service_pb2.DeleteCustomerRequest(id=created.id), metadata=bearer)
    lines = [
        {key: getattr(r, key) for key in ("audit", "caller", "id", "outcome")}
        for r in caplog.records
        if r.name.endswith("audit")
    ]
    assert lines == [
        {"audit": "CreateCustomer", "caller": "admin-service", "id": created.id, "outcome": "OK"},
        {
            "audit": "DeleteCustomer",
            "caller": "admin-service",
            "id": created.id,
            "outcome": "ABORTED",
        },
        {"audit": "DeleteCustomer", "caller": "admin-service", "id": created.id, "outcome": "OK"},
    ]
    assert "Jane" not in caplog.text
