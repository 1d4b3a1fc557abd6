"""A typed client for the services that call this one.

    async with Client("customer-management:50051", token=os.environ["CM_TOKEN"]) as cm:
        made = await cm.stub.CreateCustomer(CreateCustomerRequest(customer=Customer(name="Ann")))
        async for response in cm.watch():
            ...

`stub` is the generated, typed CustomerManagementServiceStub on a channel that gives
every call a deadline (`timeout` unless the call sets its own), the bearer token, and
gRPC's own retries of UNAVAILABLE with exponential backoff (the channel's service
config). A Create without a request_id gets one, so that a retry can never create twice.
`watch` follows WatchEvents across server restarts, shutdowns and slow-watcher cuts,
resuming from the last token it received; `changes` reads a resource's whole history.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from tmf629.v1 import service_pb2
from tmf629.v1.events_pb2 import WatchEventsRequest, WatchEventsResponse
from tmf629.v1.history_pb2 import ListChangesRequest, ResourceChange
from tmf629.v1.service_pb2_grpc import CustomerManagementServiceStub

if TYPE_CHECKING:  # grpc-stubs makes them generic; at run time they are not
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor

SERVICE = service_pb2.DESCRIPTOR.services_by_name["CustomerManagementService"].full_name
RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
"""How a watch stream ends when resuming it can help: the server stopped or lost its
database (UNAVAILABLE), or the watcher fell behind or found no free slot."""


@dataclass(frozen=True)
class Retries:
    """gRPC's retry policy for UNAVAILABLE (see gRFC A6): attempts include the first."""

    attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def service_config(self, load_balancing: str) -> str:
        return json.dumps(
            {
                "loadBalancingConfig": [{load_balancing: {}}],
                "methodConfig": [
                    {
                        "name": [{"service": SERVICE}],
                        "retryPolicy": {
                            "maxAttempts": self.attempts,
                            "initialBackoff": f"{self.initial_backoff}s",
                            "maxBackoff": f"{self.max_backoff}s",
                            "backoffMultiplier": self.multiplier,
                            "retryableStatusCodes": ["UNAVAILABLE"],
                        },
                    }
                ],
            }
        )


class Client:
    """One channel to the service, with its typed stub; close it (or use `async with`)."""

    def __init__(
        self,
        target: str,
        *,
        token: str = "",
        timeout: float = 10.0,
        retries: Retries = Retries(),
        load_balancing: str = "pick_first",
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`target`: host:port, or any gRPC name; with `load_balancing="round_robin"`,
        calls spread over every address it resolves to (`dns:///cm.internal:50051`,
        `ipv4:10.0.0.1:50051,10.0.0.2:50051`). TLS when any certificate argument is given."""
        settings = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retries.service_config(load_balancing)),
            # Keep idle connections alive within the server's keepalive rules (≥ 10 s).
            ("grpc.keepalive_time_ms", 30_000),
            *options,
        ]
        interceptors = cast(Any, _Defaults(token, timeout).interceptors())
        if root_certificates or certificate_chain:
            credentials = grpc.ssl_channel_credentials(
                root_certificates, private_key, certificate_chain
            )
            self.channel = grpc.aio.secure_channel(
                target, credentials, options=settings, interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.insecure_channel(
                target, options=settings, interceptors=interceptors
            )
        self.stub = CustomerManagementServiceStub(self.channel)
        self.timeout = timeout

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close(None)

    async def watch(
        self,
        request: WatchEventsRequest | None = None,
        *,
        max_backoff: float = 10.0,
        on_resume: Callable[[grpc.aio.AioRpcError], object] | None = None,
    ) -> AsyncIterator[WatchEventsResponse]:
        """WatchEvents, resumed from the last token whenever the stream ends in a way that
        resuming can help (UNAVAILABLE, RESOURCE_EXHAUSTED), with backoff and no end.
        Every event arrives once, in order. Any other error is raised, as is a cut
        during the initial state (`initial_state`), which a resume cannot complete."""
        wanted = WatchEventsRequest()
        if request is not None:
            wanted.CopyFrom(request)
        token = wanted.resume_token
        snapshot_done = not wanted.initial_state
        backoff = 0.1
        while True:
            attempt = WatchEventsRequest()
            attempt.CopyFrom(wanted)
            if token:
                attempt.resume_token = token
                attempt.initial_state = False
            try:
                async for response in self.stub.WatchEvents(attempt, timeout=None):
                    if response.HasField("snapshot_complete"):
                        snapshot_done = True
                    if snapshot_done:
                        token = response.resume_token or token
                    backoff = 0.1
                    yield response
            except grpc.aio.AioRpcError as error:
                if error.code() not in RESUMABLE or not snapshot_done:
                    raise
                token = _resume_token(error) or token
                if on_resume is not None:
                    on_resume(error)
            # A stream that ended (or failed) is opened again after a pause.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(max_backoff, backoff * 2)

    async def changes(self, request: ListChangesRequest) -> AsyncIterator[ResourceChange]:
        """A resource's field-level history, newest first, every page of ListChanges
        (`request` says which resource, and the filters)."""
        wanted = ListChangesRequest()
        wanted.CopyFrom(request)
        while True:
            page = await self.stub.ListChanges(wanted)
            for change in page.changes:
                yield change
            if not page.next_page_token:
                return
            wanted.page_token = page.next_page_token


def _resume_token(error: grpc.aio.AioRpcError) -> str:
    """The token the server put in the error's ErrorInfo, if any."""
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.metadata.get("resume_token", ""))
    return ""


class _Defaults:
    """Adds the bearer token and the default deadline to every call, and a request_id
    to every Create that has none."""

    def __init__(self, token: str, timeout: float) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def details(self, details: grpc.aio.ClientCallDetails, *, deadline: bool) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self._metadata)
        timeout = details.timeout
        if timeout is None and deadline:
            timeout = self._timeout
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    def interceptors(self) -> list[Any]:
        """One object per kind of call: grpc.aio files an interceptor under one kind only."""
        return [_Unary(self), _Streaming(self)]


class _Unary(_UnaryUnary):
    def __init__(self, defaults: _Defaults) -> None:
        self._defaults = defaults

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        if "request_id" in request.DESCRIPTOR.fields_by_name and not request.request_id:
            request.request_id = str(uuid.uuid4())
        return await continuation(self._defaults.details(details, deadline=True), request)


class _Streaming(_UnaryStream):
    def __init__(self, defaults: _Defaults) -> None:
        self._defaults = defaults

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        # Watch streams are long-lived: only a deadline the call sets applies.
        return await continuation(self._defaults.details(details, deadline=False), request)
