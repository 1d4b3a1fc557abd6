"""request_id on a create: a retry of the same request gets the first result, a different
request under the same id is refused. The stored request is compared by a hash of the
resource taken without its PIN and with the card masked (a fast hash of either would
give it away), so a retry that differs only there still gets the first result."""

from __future__ import annotations

import hashlib
from typing import Any

from google.protobuf.message import Message

from customer_management.domain.errors import FailedPrecondition, PreconditionViolation
from customer_management.domain.wire import Encoded

REQUEST_ID_MAX = 128


def request_hash(resource: Message) -> str:
    """What identifies a request's content: its screened resource, serialised the same
    way every time."""
    return hashlib.sha256(resource.SerializeToString(deterministic=True)).hexdigest()


def replay(
    message_type: type[Message],
    method: str,
    first_method: str,
    first_hash: str,
    response: bytes,
    request_hash: str,
) -> Encoded:
    """The first answer to a request id used again, if this is the same request."""
    if first_method != method or first_hash != request_hash:
        raise FailedPrecondition(
            "request_id was already used for a different request",
            reason="REQUEST_ID_REUSED",
            violations=[
                PreconditionViolation(
                    "REQUEST_ID", "request_id", f"first used by a different {first_method} request"
                )
            ],
        )
    first: Any = message_type.FromString(response)
    return Encoded(first.id, response)
