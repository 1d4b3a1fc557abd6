"""The client other services import: deadlines, the token, retries of UNAVAILABLE, a
request_id on every Create, WatchEvents resumed across a server restart; the README's
example as written, from the wheel installed elsewhere, type-checked; and two replicas on
one PostgreSQL behind one client address."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from faults import COMMAND, ServerProcess, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import postgres_database
from customer_management.client import Client, Retries
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import EventType, WatchEventsRequest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
TOKEN = "client-test-token"
CREATE = EventType.EVENT_TYPE_CUSTOMER_CREATE_NOTIFICATION


def callers(path: Path) -> str:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    entry = {"identity": "billing", "token_sha256": digest, "scopes": ["read", "write", "watch"]}
    path.write_text(json.dumps({"callers": [entry]}))
    return str(path)


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("### Calling it from Python") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the README has no Python client example"
    return found.group(1)


def installed_elsewhere(tmp_path: Path) -> Path:
    """A virtual environment of another service with this project installed from its wheel,
    as `pip install` puts it, not the editable checkout: only what the wheel ships imports.
    The dependencies come from this environment's site-packages, without its .pth files."""
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT],
        check=True,
        timeout=300,
    )
    consumer = tmp_path / "consumer"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", consumer], check=True)
    site = consumer / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = site / "site-packages"
    (wheel,) = wheels.glob("customer_management-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, timeout=300)
    dependencies = Path(grpc.__file__).parents[1]
    (site / "dependencies.pth").write_text(f"{dependencies}\n")
    python = consumer / "bin" / "python"
    program = "import customer_management.client as c, tmf629.v1.service_pb2_grpc as s\n"
    program += "print(c.__file__); print(s.__file__)"
    found = subprocess.run([python, "-c", program], capture_output=True, text=True, check=True)
    client, stubs = map(Path, found.stdout.split())
    assert client.is_relative_to(consumer), client
    assert stubs.is_relative_to(consumer), stubs
    # Typed for the caller's mypy: PEP 561 markers and the stubs' .pyi files ship too.
    assert (client.parent / "py.typed").exists() and (stubs.parents[1] / "py.typed").exists()
    assert stubs.with_suffix(".pyi").exists()
    return python


async def test_the_readme_example_runs_as_written_after_pip_install(tmp_path: Path) -> None:
    python = await asyncio.to_thread(installed_elsewhere, tmp_path)
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'readme.db'}",
        tmp_path / "server.log",
        "--tokens-file",
        callers(tmp_path / "callers.json"),
    )
    await server.start()
    try:
        example = tmp_path / "example.py"
        example.write_text(readme_example())
        result = await asyncio.to_thread(
            subprocess.run,
            [python, str(example)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CM_TARGET": server.address, "CM_TOKEN": TOKEN},
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[:3] == [
            "Ann Example 1",
            "CHANGE_KIND_UPDATE billing ['name: Ann Other']",
            "CHANGE_KIND_CREATE billing ['name: Ann Example', 'status: Created']",
        ], result.stdout
    finally:
        await server.stop()
    # And a caller's mypy --strict accepts it, with the types the wheel ships.
    checked = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mypy", "--strict", "--python-executable", python, example],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stdout


async def test_retries_a_restart_and_resumes_watching_across_it(tmp_path: Path) -> None:
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'client.db'}",
        tmp_path / "server.log",
        "--tokens-file",
        callers(tmp_path / "callers.json"),
    )
    await server.start()
    retries = Retries(attempts=5, initial_backoff=1.0, max_backoff=3.0)
    resumed: list[grpc.aio.AioRpcError] = []
    seen: list[str] = []
    try:
        async with Client(server.address, token=TOKEN, retries=retries) as cm:

            async def watch() -> None:
                async for response in cm.watch(on_resume=resumed.append):
                    if response.event.event_type == CREATE:
                        seen.append(response.event.event.customer.id)

            watching = asyncio.create_task(watch())
            await asyncio.sleep(0.5)
            request = pb.CreateCustomerRequest(customer=Customer(name="first"))
            first = await cm.stub.CreateCustomer(request)
            assert request.request_id  # given one, so that a retry cannot create twice
            assert (await cm.stub.CreateCustomer(request)).id == first.id
            made = [first.id]

            await server.kill()
            during = asyncio.ensure_future(cm.stub.GetCustomer(pb.GetCustomerRequest(id=first.id)))
            await asyncio.sleep(0.5)
            await server.start()
            assert (await during).id == first.id  # retried until the server was back

            for i in range(5):
                created = await cm.stub.CreateCustomer(
                    pb.CreateCustomerRequest(customer=Customer(name=f"after {i}"))
                )
                made.append(created.id)
            deadline = asyncio.get_running_loop().time() + 20
            while seen != made:
                assert asyncio.get_running_loop().time() < deadline, (seen, made)
                await asyncio.sleep(0.1)
            assert resumed and all(e.code() == grpc.StatusCode.UNAVAILABLE for e in resumed)
            watching.cancel()
            with pytest.raises(asyncio.CancelledError):
                await watching

            # Without the token the same client is refused, not retried.
        async with Client(server.address) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await anonymous.stub.GetCustomer(pb.GetCustomerRequest(id=first.id))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop()


def handled(metrics_port: int, method: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and f'grpc_method="{method}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def postgres_url() -> object:
    yield from postgres_database()


async def test_two_replicas_on_one_postgresql_share_the_calls(
    postgres_url: str, tmp_path: Path
) -> None:
    # A replica that may not migrate refuses an old schema instead of serving on it.
    refused = await asyncio.to_thread(
        subprocess.run,
        [COMMAND, "serve", "--port", "0", "--database-url", postgres_url, "--migrate", "false"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "customer-management migrate" in refused.stderr
    # The migration step, once; then the replicas, which do not migrate.
    migrated = await asyncio.to_thread(
        subprocess.run,
        [COMMAND, "migrate", "--database-url", postgres_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    metrics = [free_port(), free_port()]
    replicas = [
        ServerProcess(
            postgres_url,
            tmp_path / f"replica-{i}.log",
            "--migrate",
            "false",
            "--metrics-port",
            str(metrics[i]),
            "--base-url",  # one for all: hrefs must not name the replica that answered
            "https://cm.example/tmf-api/customerManagement/v2",
        )
        for i in range(2)
    ]
    try:
        await asyncio.gather(*(replica.start() for replica in replicas))
        for replica in replicas:  # readiness and liveness, as a probe asks
            async with grpc.aio.insecure_channel(replica.address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for name in ("tmf629.v1.CustomerManagementService", "liveness"):
                    answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
                    assert answer.status == health_pb2.HealthCheckResponse.SERVING
        target = "ipv4:" + ",".join(replica.address for replica in replicas)
        async with (
            Client(target, load_balancing="round_robin") as cm,
            Client(replicas[0].address) as first_only,
        ):
            watch = first_only.watch(WatchEventsRequest(event_types=[CREATE]))
            heard: list[str] = []

            async def listen() -> None:
                async for response in watch:
                    heard.append(response.event.event.customer.id)

            listening = asyncio.create_task(listen())
            await asyncio.sleep(0.5)
            made = []
            for i in range(40):
                created = await cm.stub.CreateCustomer(
                    pb.CreateCustomerRequest(customer=Customer(name=f"spread {i}"))
                )
                got = await cm.stub.GetCustomer(pb.GetCustomerRequest(id=created.id))
                assert got == created  # whichever replica answers, the data is the same
                made.append(created.id)
            deadline = asyncio.get_running_loop().time() + 15
            while heard != made:  # the other replica's writes reach this one's watchers
                assert asyncio.get_running_loop().time() < deadline, (len(heard), len(made))
                await asyncio.sleep(0.1)
            listening.cancel()
        # Round robin alternates by call (so Creates and Gets may each keep to one replica):
        # count both.
        shares = [
            sum(
                [
                    await asyncio.to_thread(handled, port, m)
                    for m in ("CreateCustomer", "GetCustomer")
                ]
            )
            for port in metrics
        ]
        assert sum(shares) == 80 and min(shares) >= 20, shares
    finally:
        await asyncio.gather(*(replica.stop() for replica in replicas))
