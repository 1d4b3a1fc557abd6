"""Health, reflection and the error model for requests that do not even parse."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from customer_management.server import SERVICE_NAME
from helpers import details


async def test_health_is_serving_for_the_server_and_the_service(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    names = {service.name for service in reply.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_unparsable_request_bytes_are_invalid_argument(channel) -> None:
    for method in ("GetCustomer", "CreateCustomerAccount", "ListPaymentMeans", "DeleteCustomer"):
        call = channel.unary_unary(f"/{SERVICE_NAME}/{method}")
        try:
            await call(b"\xff\xff\xff\xff\x0f")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert details(error)["reason"] == "MALFORMED_REQUEST"
        else:
            raise AssertionError(f"{method} accepted garbage")


async def test_unknown_method_is_unimplemented(channel) -> None:
    call = channel.unary_unary(f"/{SERVICE_NAME}/Nope")
    try:
        await call(b"")
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert details(error)["reason"] == "UNKNOWN_METHOD"
    else:
        raise AssertionError("an unknown method answered")
    # Also for a client that expected a stream, and for any name: nothing is kept per name.
    stream = channel.unary_stream("/nope.Service/Whatever")
    try:
        async for _ in stream(b""):
            pass
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    else:
        raise AssertionError("an unknown streaming method answered")


async def test_default_href_uses_the_port_actually_bound(tmp_path) -> None:
    from customer_management.config import Config
    from customer_management.server import Server
    from tmf629.v1 import service_pb2 as pb
    from tmf629.v1 import service_pb2_grpc
    from tmf629.v1.customer_pb2 import Customer

    server = Server(Config(port=0, database_url=f"sqlite:///{tmp_path / 'href.db'}"))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            created = await stub.CreateCustomer(
                pb.CreateCustomerRequest(customer=Customer(name="x"))
            )
        assert created.href.startswith(
            f"http://localhost:{server.port}/tmf-api/customerManagement/v2/customer/"
        )
    finally:
        await server.stop(grace=0)


async def test_a_taken_port_is_a_clear_start_up_error(server, tmp_path) -> None:
    import pytest

    from customer_management.config import Config
    from customer_management.server import Server

    with pytest.raises(SystemExit, match="already taken"):
        await Server(
            Config(port=server.port, database_url=f"sqlite:///{tmp_path / 'x.db'}")
        ).start()


async def test_shutdown_turns_health_not_serving_before_the_server_stops(tmp_path) -> None:
    import asyncio

    from customer_management.config import Config
    from customer_management.server import Server

    server = Server(Config(port=0, database_url=f"sqlite:///{tmp_path / 'stop.db'}"))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(server.stop(grace=0.5))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping
