"""Resource ids and caller-assigned keys: new ids are made here, and every id or key a
caller sends is checked here (length, characters) before anything looks it up."""

from __future__ import annotations

import uuid

from customer_management.domain.errors import FieldViolation, InvalidArgument
from customer_management.domain.validation import ID_MAX, key_problem


def new_id() -> str:
    """A new resource's id: opaque, random, never reused (a UUID 4)."""
    return str(uuid.uuid4())


def require_id(id: str, path: str = "id") -> None:
    """Refuses a missing or malformed id, naming `path`."""
    if not id:
        raise InvalidArgument(
            f"{path} is required", violations=[FieldViolation(path, "is required")]
        )
    check_key(path, id, ID_MAX)


def check_key(path: str, value: str, limit: int) -> None:
    """Refuses a key (request id, external id) too long or with characters it may not hold."""
    if problem := key_problem(value, limit):
        raise InvalidArgument(f"{path} {problem}", violations=[FieldViolation(path, problem)])
