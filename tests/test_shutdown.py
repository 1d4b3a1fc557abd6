"""SIGTERM under load, to a server in its own process: health turns NOT_SERVING first,
calls in flight complete, watchers end UNAVAILABLE with a resume token, and the process
exits within its grace period."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from faults import ServerProcess, stub
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import details
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import WatchEventsRequest

GRACE = 5.0


async def test_sigterm_under_load_drains_and_hands_watchers_their_tokens(tmp_path: Path) -> None:
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'stop.db'}", tmp_path / "server.log", "--grace-period", str(GRACE)
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            service = stub(channel)
            account = await service.CreateCustomerAccount(
                pb.CreateCustomerAccountRequest(
                    customer_account=CustomerAccount(name="a", account_type="R", pin="2468")
                )
            )
            watchers = [service.WatchEvents(WatchEventsRequest()) for _ in range(3)]
            await asyncio.sleep(0.5)
            await service.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="c")))
            for watcher in watchers:
                assert (await watcher.read()).HasField("event")  # started
            health = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING

            # Each PIN check spends about 0.1 s hashing: these are in flight at SIGTERM.
            checks = [
                asyncio.ensure_future(
                    service.VerifyCustomerAccountPin(
                        pb.VerifyCustomerAccountPinRequest(id=account.id, pin="2468"), timeout=30
                    )
                )
                for _ in range(4)  # fewer than the 5 attempts counted at once
            ]
            await asyncio.sleep(0.05)
            started = asyncio.get_running_loop().time()
            server.terminate()

            status = await asyncio.wait_for(health.read(), GRACE)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            for verdict in await asyncio.gather(*checks):
                assert verdict.match  # completed, not cut
            for watcher in watchers:
                try:
                    while True:
                        await asyncio.wait_for(watcher.read(), GRACE)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    info = details(error)
                    assert info["reason"] == "SHUTTING_DOWN"
                    assert info["metadata"]["resume_token"]
            assert await server.exited(GRACE + 5) == 0
            assert asyncio.get_running_loop().time() - started < GRACE + 5
    finally:
        await server.stop()
