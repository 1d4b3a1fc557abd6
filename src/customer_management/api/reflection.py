"""Server reflection whose symbol look-up also finds methods (`grpcurl describe Svc.Method`).

protobuf's upb descriptor pool resolves services and messages but not method names in
FindFileContainingSymbol, so reflection would answer "Symbol not found" for a method.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer


class _MethodAwarePool:
    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            method = self._pool.FindMethodByName(symbol)
            file: FileDescriptor = method.containing_service.file
            return file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable(server: Any, *service_names: str) -> None:
    """Serves reflection of `service_names` on `server` (a grpc.aio server, or the
    Registry that wraps its handlers)."""
    pool: Any = _MethodAwarePool(descriptor_pool.Default())
    servicer = ReflectionServicer((*service_names, reflection.SERVICE_NAME), pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
