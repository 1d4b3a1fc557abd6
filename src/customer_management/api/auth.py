"""Who may call what: bearer tokens or client certificates, with scopes, in one interceptor.

The callers file maps SHA-256 hashes of tokens (never the tokens), or the subjects of
client certificates (mutual TLS), to an identity and its scopes. A call presents
`authorization: Bearer <token>`, whose hash is compared with every entry in constant
time, or a certificate the server's client CA signed. Health checking stays open; every
other method needs its scope, and a method this table does not know is denied.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from customer_management.api.errors import WrappingInterceptor, abort
from customer_management.domain.callers import current as current_caller
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
    """`{"callers": [{"identity", "scopes", and "token_sha256" or "subject"}]}`."""

    def __init__(
        self, entries: list[tuple[bytes, Caller]], subjects: dict[str, Caller] | None = None
    ) -> None:
        self._entries = entries
        self._subjects = subjects or {}

    @classmethod
    def load(cls, path: str) -> Callers:
        try:
            data = json.loads(Path(path).read_text())
            entries, subjects = [], {}
            for i, entry in enumerate(data["callers"]):
                scopes = frozenset(entry["scopes"])
                if not scopes <= SCOPES:
                    raise ValueError(f"callers[{i}]: unknown scopes {sorted(scopes - SCOPES)}")
                caller = Caller(str(entry["identity"]), scopes)
                if "subject" in entry:
                    subjects[str(entry["subject"])] = caller
                    continue
                digest = bytes.fromhex(entry["token_sha256"])
                if len(digest) != 32:
                    raise ValueError(f"callers[{i}].token_sha256 is not a SHA-256 in hex")
                entries.append((digest, caller))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"cannot use the tokens file {path}: {error}") from error
        return cls(entries, subjects)

    def by_subject(self, subject: str) -> Caller | None:
        """The caller a verified client certificate names (its subject, `CN=…`)."""
        return self._subjects.get(subject)

    def find(self, token: str) -> Caller | None:
        """The caller of `token`, comparing with every entry whatever matches first."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for expected, caller in self._entries:
            if hmac.compare_digest(digest, expected):
                found = caller
        return found


def denial(caller: Caller | None, scope: str) -> DomainError | None:
    """Why `caller` (None: nobody recognised) may not do what needs `scope`; None if it may.
    The REST gateway asks the same."""
    if caller is None:
        return DomainError(
            "a valid bearer token (authorization: Bearer …) or client certificate is required",
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


def required_scope(method: str) -> str | None:
    """The scope a method needs; None for a method this table does not know."""
    if not method.startswith(SERVICE):
        return None
    name = method[len(SERVICE) :]
    return next((s for verb, s in _SCOPE_OF_VERB.items() if name.startswith(verb)), None)


class AuthInterceptor(WrappingInterceptor):
    def __init__(self, callers: Callers, *, reflection_open: bool = True) -> None:
        super().__init__()
        self.callers = callers
        self.open = OPEN_PREFIXES + (REFLECTION_PREFIXES if reflection_open else ())

    def wrap(self, method: str, handler: Any) -> Any:
        if method.startswith(self.open):
            return handler
        scope = required_scope(method)
        return _checking(handler, lambda context: self._denial(scope, context))

    def _denial(self, scope: str | None, context: Any) -> DomainError | None:
        if scope is None:
            return DomainError(
                "this method is not open to any caller",
                code="PERMISSION_DENIED",
                reason="METHOD_NOT_ALLOWED",
            )
        caller = self._caller(context)
        if caller is not None:
            current_caller.set(caller.identity)  # for created_by / updated_by, in this call
        return denial(caller, scope)

    def _caller(self, context: Any) -> Caller | None:
        metadata = context.invocation_metadata() or ()
        header = next((value for key, value in metadata if key == "authorization"), "")
        kind, _, token = str(header).partition(" ")
        if kind.lower() == "bearer" and token.strip():
            return self.callers.find(token.strip())
        return self.callers.by_subject(certificate_subject(context))


def certificate_subject(context: Any) -> str:
    """`CN=…` of the client certificate grpc verified (mutual TLS); empty without one."""
    names = context.auth_context().get("x509_common_name") or []
    return f"CN={names[0].decode()}" if names else ""


def _checking(handler: Any, deny: Callable[[Any], DomainError | None]) -> Any:
    """`handler`, answering the denial `deny` finds for the call instead, if any."""
    if handler is None:

        async def unknown(request: Any, context: Any) -> Any:
            await abort(context, deny(context) or _NOT_ALLOWED)

        return grpc.unary_unary_rpc_method_handler(unknown)
    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            if denial := deny(context):
                await abort(context, denial)
            return await behavior(request, context)

        return handler._replace(unary_unary=unary)
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            if denial := deny(context):
                await abort(context, denial)
            async with aclosing(stream(request, context)) as responses:
                async for response in responses:
                    yield response

        return handler._replace(unary_stream=streaming)
    return handler  # request-streaming methods: only reflection, open above


_NOT_ALLOWED = DomainError(
    "this method is not open to any caller", code="PERMISSION_DENIED", reason="METHOD_NOT_ALLOWED"
)
