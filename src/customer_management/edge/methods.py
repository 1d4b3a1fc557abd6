"""The service's methods, from its descriptor: the scope each needs and whether it
changes anything (a mutation is audited). The REST routes name the method they stand for."""

from __future__ import annotations

from dataclasses import dataclass

from tmf629.v1 import service_pb2

SERVICE = service_pb2.DESCRIPTOR.services_by_name["CustomerManagementService"]
PREFIX = f"/{SERVICE.full_name}/"
"""The start of every method path of the service, `/tmf629.v1.CustomerManagementService/`."""
SCOPES = frozenset({"read", "write", "watch", "admin"})
_SCOPE_OF_VERB = {
    "Get": "read",
    "List": "read",
    "Create": "write",
    "Update": "write",
    "Delete": "write",
    "Verify": "write",
    "Watch": "watch",
}
_MUTATING_VERBS = ("Create", "Update", "Delete", "Verify")


@dataclass(frozen=True)
class Method:
    name: str
    scope: str | None
    """None: a method no caller may call (one this table has no verb for)."""
    mutates: bool


METHODS: dict[str, Method] = {
    method.name: Method(
        method.name,
        next((s for verb, s in _SCOPE_OF_VERB.items() if method.name.startswith(verb)), None),
        method.name.startswith(_MUTATING_VERBS),
    )
    for method in SERVICE.methods
}


def by_path(path: str) -> Method | None:
    """The method of a gRPC path (`/tmf629.v1.CustomerManagementService/GetCustomer`);
    None for a path outside the service."""
    if not path.startswith(PREFIX):
        return None
    return METHODS.get(path[len(PREFIX) :])
