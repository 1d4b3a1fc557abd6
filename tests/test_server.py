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
    else:
        raise AssertionError("an unknown method answered")
