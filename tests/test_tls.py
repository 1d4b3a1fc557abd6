"""TLS and mutual TLS: the client certificate's subject is the caller's identity."""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from customer_management.config import Config
from customer_management.server import Server
from helpers import rpc_outcome
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer

DENIED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate CN=billing."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", *KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    for name, extra in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("billing", "")):
        cn = "localhost" if name == "server" else name
        openssl("req", *KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **settings: Any) -> AsyncIterator[Server]:
    server = Server(Config(port=0, database_url=f"sqlite:///{tmp_path / 'tls.db'}", **settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1)


def channel(server: Server, pki: Path, *, client: bool) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "billing.key").read_bytes() if client else None,
        certificate_chain=(pki / "billing.pem").read_bytes() if client else None,
    )
    return grpc.aio.secure_channel(f"localhost:{server.port}", credentials)


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_tls_serves_encrypted_and_refuses_plaintext(tmp_path: Path, pki: Path) -> None:
    tls = {"tls_cert": str(pki / "server.pem"), "tls_key": str(pki / "server.key")}
    async with running(tmp_path, **tls) as server:
        async with channel(server, pki, client=False) as secure:
            stub = service_pb2_grpc.CustomerManagementServiceStub(secure)
            await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="t")))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as plain:
            stub = service_pb2_grpc.CustomerManagementServiceStub(plain)
            call = stub.ListCustomers(pb.ListCustomersRequest(), timeout=3)
            assert await code_of(call) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_identity_gets_its_scopes(tmp_path: Path, pki: Path) -> None:
    callers = tmp_path / "callers.json"
    entry = {"identity": "billing", "subject": "CN=billing", "scopes": ["read"]}
    callers.write_text(json.dumps({"callers": [entry]}))
    settings = {
        "tls_cert": str(pki / "server.pem"),
        "tls_key": str(pki / "server.key"),
        "tls_client_ca": str(pki / "ca.pem"),
        "tokens_file": str(callers),
        "host": "0.0.0.0",  # allowed: callers must authenticate
    }
    async with running(tmp_path, **settings) as server:
        async with channel(server, pki, client=True) as mutual:
            stub = service_pb2_grpc.CustomerManagementServiceStub(mutual)
            assert await code_of(stub.ListCustomers(pb.ListCustomersRequest())) == (
                grpc.StatusCode.OK
            )
            create = stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="x")))
            assert await code_of(create) == grpc.StatusCode.PERMISSION_DENIED
            # The matrix's mutual-TLS column: the certificate's scope, for every RPC.
            for method in pb.DESCRIPTOR.services_by_name["CustomerManagementService"].methods:
                code = await rpc_outcome(stub, method)
                if method.name.startswith(("Get", "List")):
                    assert code not in DENIED, (method.name, code)
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (method.name, code)
        async with channel(server, pki, client=False) as anonymous:
            stub = service_pb2_grpc.CustomerManagementServiceStub(anonymous)
            call = stub.ListCustomers(pb.ListCustomersRequest(), timeout=3)
            assert await code_of(call) == grpc.StatusCode.UNAVAILABLE  # no certificate, no call


async def test_the_rest_gateway_serves_https_and_knows_certificate_identities(
    tmp_path: Path, pki: Path
) -> None:
    callers = tmp_path / "callers.json"
    entry = {"identity": "billing", "subject": "CN=billing", "scopes": ["read"]}
    callers.write_text(json.dumps({"callers": [entry]}))
    settings = {
        "tls_cert": str(pki / "server.pem"),
        "tls_key": str(pki / "server.key"),
        "tls_client_ca": str(pki / "ca.pem"),
        "tokens_file": str(callers),
        "http_port": 0,
    }
    async with running(tmp_path, **settings) as server:
        url = f"https://localhost:{server.http_port}/tmf-api/customerManagement/v2/customer"
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        context.load_cert_chain(pki / "billing.pem", pki / "billing.key")
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=context) as response:
                assert response.status == 200
            async with session.post(url, json={"name": "x"}, ssl=context) as response:
                assert response.status == 403
                assert (await response.json())["code"] == "MISSING_SCOPE"
            anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            with pytest.raises(aiohttp.ClientError):  # no certificate, no call
                async with session.get(url, ssl=anonymous) as response:
                    await response.read()


def test_hrefs_default_to_https_when_serving_tls() -> None:
    assert Config(tls_cert="c.pem").href_base(8443).startswith("https://localhost:8443/")
    assert Config().href_base(8080).startswith("http://localhost:8080/")
