"""Who may call what: bearer tokens or client certificates, with scopes.

The callers file maps SHA-256 hashes of tokens (never the tokens), or the subjects of
client certificates (mutual TLS), to an identity and its scopes. A call presents
`authorization: Bearer <token>`, whose hash is compared with every entry in constant
time, or a certificate the server's client CA signed. Each front door reads the two
credentials from its own transport and asks `access`, which checks the scope the
method needs; entering the answer sets the caller for created_by / updated_by, leaving
it resets it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from contextvars import Token
from dataclasses import dataclass
from pathlib import Path

from customer_management.domain import callers as current_caller
from customer_management.domain.errors import DomainError
from customer_management.edge.methods import SCOPES, Method


@dataclass(frozen=True)
class Caller:
    identity: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Credentials:
    """What a call presents: its `authorization` header and the subject (`CN=…`) of the
    client certificate TLS verified; either may be empty."""

    authorization: str = ""
    subject: str = ""


def subject(common_name: str | None) -> str:
    """The subject a callers file names a certificate by: `CN=<common name>`."""
    return f"CN={common_name}" if common_name else ""


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

    def identify(self, credentials: Credentials) -> Caller | None:
        """The caller of a bearer token if the call presents one, else of its certificate."""
        kind, _, token = credentials.authorization.partition(" ")
        if kind.lower() == "bearer" and token.strip():
            return self._by_token(token.strip())
        return self._subjects.get(credentials.subject)

    def _by_token(self, token: str) -> Caller | None:
        """The caller of `token`, comparing with every entry whatever matches first."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for expected, caller in self._entries:
            if hmac.compare_digest(digest, expected):
                found = caller
        return found


def denial(caller: Caller | None, method: Method) -> DomainError | None:
    """Why `caller` (None: nobody recognised) may not call `method`; None if it may."""
    if method.scope is None:
        return DomainError(
            "this method is not open to any caller",
            code="PERMISSION_DENIED",
            reason="METHOD_NOT_ALLOWED",
        )
    if caller is None:
        return DomainError(
            "a valid bearer token (authorization: Bearer …) or client certificate is required",
            code="UNAUTHENTICATED",
            reason="UNAUTHENTICATED",
        )
    if method.scope not in caller.scopes and "admin" not in caller.scopes:
        return DomainError(
            f"{caller.identity} lacks the {method.scope!r} scope this method needs",
            code="PERMISSION_DENIED",
            reason="MISSING_SCOPE",
            metadata={"scope": method.scope},
        )
    return None


class Access:
    """One call's access: who the caller is and, if it may not call the method, why.
    Entered, it acts as that caller (created_by / updated_by) until it is left; the
    caller is set even when refused, so that the refusal is logged under who tried."""

    __slots__ = ("_reset", "identity", "refused")

    def __init__(self, identity: str | None, refused: DomainError | None) -> None:
        self.identity = identity
        self.refused = refused
        self._reset: Token[str] | None = None

    def __enter__(self) -> Access:
        if self.identity is not None:
            self._reset = current_caller.current.set(self.identity)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reset is not None:
            current_caller.current.reset(self._reset)
            self._reset = None


def access(callers: Callers | None, method: Method, credentials: Credentials) -> Access:
    """The access of a call to `method` with `credentials`. Without a callers file every
    call is allowed and keeps the caller it has (anonymous)."""
    if callers is None:
        return Access(None, None)
    caller = callers.identify(credentials)
    return Access(caller.identity if caller else None, denial(caller, method))
