"""Who may call what: bearer tokens or client certificates, with scopes.

The callers file maps SHA-256 hashes of tokens (never the tokens), or the subjects of
client certificates (mutual TLS), to an identity and its scopes. A call presents
`authorization: Bearer <token>`, whose hash is compared with every entry in constant
time, or a certificate the server's client CA signed. Health checking stays open; every
other method needs its scope, and a method this table does not know is denied
(api/handlers.py asks, for every call).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from customer_management.domain.errors import DomainError
from tmf629.v1 import service_pb2

SCOPES = frozenset({"read", "write", "watch", "admin"})
SERVICE = "/" + service_pb2.DESCRIPTOR.services_by_name["CustomerManagementService"].full_name + "/"
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

    def identify(self, context: Any) -> Caller | None:
        """The caller of a gRPC call: its bearer token's, else its client certificate's."""
        metadata = context.invocation_metadata() or ()
        header = next((value for key, value in metadata if key == "authorization"), "")
        kind, _, token = str(header).partition(" ")
        if kind.lower() == "bearer" and token.strip():
            return self.find(token.strip())
        return self.by_subject(certificate_subject(context))

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


def certificate_subject(context: Any) -> str:
    """`CN=…` of the client certificate grpc verified (mutual TLS); empty without one."""
    names = context.auth_context().get("x509_common_name") or []
    return f"CN={names[0].decode()}" if names else ""
