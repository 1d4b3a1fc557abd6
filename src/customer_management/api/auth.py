"""Who may call what: bearer tokens with scopes, checked in one interceptor.

The tokens file maps SHA-256 hashes of tokens (never the tokens) to an identity and its
scopes. A call presents `authorization: Bearer <token>`; its hash is compared with every
entry in constant time. Health checking stays open; every other method needs its scope,
and a method this table does not know is denied.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from customer_management.api.errors import _Interceptor, abort
from customer_management.domain.errors import DomainError

SCOPES = frozenset({"read", "write", "watch", "admin"})
SERVICE = "/tmf629.v1.CustomerManagementService/"
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_SCOPE_OF_VERB = {
    "Get": "read",
    "List": "read",
    "Create": "write",
    "Update": "write",
    "Delete": "write",
    "Verify": "write",
    "Watch": "watch",
}


@dataclass(frozen=True)
class Caller:
    identity: str
    scopes: frozenset[str]


class Callers:
    """The tokens file: `{"callers": [{"identity", "token_sha256", "scopes"}]}`."""

    def __init__(self, entries: list[tuple[bytes, Caller]]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: str) -> Callers:
        try:
            data = json.loads(Path(path).read_text())
            entries = []
            for i, entry in enumerate(data["callers"]):
                scopes = frozenset(entry["scopes"])
                if not scopes <= SCOPES:
                    raise ValueError(f"callers[{i}]: unknown scopes {sorted(scopes - SCOPES)}")
                digest = bytes.fromhex(entry["token_sha256"])
                if len(digest) != 32:
                    raise ValueError(f"callers[{i}].token_sha256 is not a SHA-256 in hex")
                entries.append((digest, Caller(str(entry["identity"]), scopes)))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"cannot use the tokens file {path}: {error}") from error
        return cls(entries)

    def find(self, token: str) -> Caller | None:
        """The caller of `token`, comparing with every entry whatever matches first."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for expected, caller in self._entries:
            if hmac.compare_digest(digest, expected):
                found = caller
        return found


def required_scope(method: str) -> str | None:
    """The scope a method needs; None for a method this table does not know."""
    if not method.startswith(SERVICE):
        return None
    name = method[len(SERVICE) :]
    return next((s for verb, s in _SCOPE_OF_VERB.items() if name.startswith(verb)), None)


class AuthInterceptor(_Interceptor):
    def __init__(self, callers: Callers, *, reflection_open: bool = True) -> None:
        self.callers = callers
        self.open = OPEN_PREFIXES + (REFLECTION_PREFIXES if reflection_open else ())

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = details.method
        handler = await continuation(details)
        if method.startswith(self.open):
            return handler
        denial = self._denial(method, details.invocation_metadata or ())
        if denial is None:
            return handler
        denying: grpc.RpcMethodHandler[Any, Any] = _denying(handler, denial)
        return denying

    def _denial(self, method: str, metadata: Any) -> DomainError | None:
        scope = required_scope(method)
        if scope is None:
            return DomainError(
                "this method is not open to any caller",
                code="PERMISSION_DENIED",
                reason="METHOD_NOT_ALLOWED",
            )
        header = next((value for key, value in metadata if key == "authorization"), "")
        kind, _, token = str(header).partition(" ")
        caller = self.callers.find(token.strip()) if kind.lower() == "bearer" else None
        if caller is None:
            return DomainError(
                "a valid bearer token is required (authorization: Bearer …)",
                code="UNAUTHENTICATED",
                reason="UNAUTHENTICATED",
            )
        if scope not in caller.scopes and "admin" not in caller.scopes:
            return DomainError(
                f"{caller.identity} lacks the {scope!r} scope this method needs",
                code="PERMISSION_DENIED",
                reason="MISSING_SCOPE",
                metadata={"scope": scope},
            )
        return None


def _denying(handler: Any, denial: DomainError) -> Any:
    """A handler of the same shape as `handler` that answers `denial`."""

    async def unary(request: Any, context: Any) -> Any:
        await abort(context, denial)

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        await abort(context, denial)
        yield  # pragma: no cover (abort raises)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(unary)
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary, request_deserializer=lambda data: data)
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=stream, request_deserializer=lambda data: data)
    return handler  # request-streaming methods: only reflection, open above
