"""SIGTERM under load, to a server in its own process: health turns NOT_SERVING first,
calls in flight complete, watchers end UNAVAILABLE with a resume token, and the process
exits within its grace period."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
from faults import ServerProcess, stub
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import details
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import WatchEventsRequest

GRACE = 5.0
MARGIN = 1.5
"""Past its grace period, the process has this long to close its database and exit
(a stream still open, the health watch here, holds it for the whole grace period)."""


async def test_sigterm_under_load_drains_and_hands_watchers_their_tokens(tmp_path: Path) -> None:
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'stop.db'}", tmp_path / "server.log", "--grace-period", str(GRACE)
    )
    await server.start()
    clock = asyncio.get_running_loop().time
    tasks: list[asyncio.Future[Any]] = []
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

            async def not_serving() -> float:
                """When health said NOT_SERVING."""
                status = await health.read()
                assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING, status
                return clock()

            async def ended(watcher: Any) -> tuple[float, grpc.aio.AioRpcError]:
                """When a watcher's stream ended, and how."""
                try:
                    while True:
                        await watcher.read()
                except grpc.aio.AioRpcError as error:
                    return clock(), error

            async def refused() -> float:
                """When a new call was first refused (each before it was answered)."""
                while True:
                    try:
                        await service.GetCustomerAccount(
                            pb.GetCustomerAccountRequest(id=account.id), timeout=1
                        )
                    except grpc.aio.AioRpcError:
                        return clock()
                    await asyncio.sleep(0.01)

            health_said = asyncio.ensure_future(not_serving())
            watchers_ended = [asyncio.ensure_future(ended(w)) for w in watchers]
            calls_refused = asyncio.ensure_future(refused())
            tasks += [health_said, *watchers_ended, calls_refused]
            # Each PIN check spends about 0.1 s hashing: these are in flight at SIGTERM.
            checks = [
                asyncio.ensure_future(
                    service.VerifyCustomerAccountPin(
                        pb.VerifyCustomerAccountPinRequest(id=account.id, pin="2468"), timeout=30
                    )
                )
                for _ in range(4)  # fewer than the 5 attempts counted at once
            ]
            tasks += checks
            await asyncio.sleep(0.05)
            assert not calls_refused.done()  # new calls are answered up to SIGTERM
            started = clock()
            server.terminate()

            said = await asyncio.wait_for(health_said, GRACE)
            for verdict in await asyncio.wait_for(asyncio.gather(*checks), GRACE):
                assert verdict.match  # completed, not cut
            ends = await asyncio.wait_for(asyncio.gather(*watchers_ended), GRACE)
            for _, error in ends:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                info = details(error)
                assert info["reason"] == "SHUTTING_DOWN"
                assert info["metadata"]["resume_token"]
            first_refusal = await asyncio.wait_for(calls_refused, GRACE)
            # NOT_SERVING first: before any watcher is ended or any new call refused.
            timeline = {
                "not_serving": said - started,
                "watchers_ended": [round(at - started, 3) for at, _ in ends],
                "first_refusal": first_refusal - started,
            }
            assert all(said < at for at, _ in ends), timeline
            assert said < first_refusal, timeline
            assert await server.exited(GRACE + MARGIN) == 0
            assert clock() - started < GRACE + MARGIN, timeline
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()
