"""A change event as a CloudEvents 1.0 message for a broker: its subject, headers and body.

Two content modes (docs/relay.md):
- `json` (structured): the whole envelope is the JSON body, `data` the resource as TMF
  JSON (application/cloudevents+json);
- `protobuf` (binary, as the NATS binding of CloudEvents defines it): the attributes are
  `ce-` headers and the body is the resource as protobuf, the same data.
The CloudEvents SDK builds and validates the envelope; this module only maps our event
onto its attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from enum import Enum
from typing import Any

from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from google.protobuf import json_format

from customer_management.domain.notifications import KIND_OF_TYPE, tmf_name
from tmf629.v1.events_pb2 import Event

TYPE_PREFIX = "org.tmforum.tmf629."
"""`type` is this plus TMF's notification name: org.tmforum.tmf629.CustomerCreateNotification."""
HISTORY_ATTRIBUTE = "tmf629history"
"""An extension attribute: the event history the id belongs to (ids restart with a new
database), so that a consumer, and the relay itself, can tell events apart across them."""
MSG_ID = "Nats-Msg-Id"
HISTORY_HEADER = "Tmf629-History"
"""`tmf629history` as a header in both modes, so the relay reads it without the body."""
_FORMAT = JSONFormat()
_RESOURCE = {
    "customer": "customer",
    "customer_account": "customerAccount",
    "payment_mean": "paymentMean",
    "credit_category": "creditCategory",
}
"""A kind's subject token: its TMF name, as in the REST paths and the notifications."""
_CHANGE = {"Create": "created", "Update": "updated", "Delete": "deleted"}


class ContentMode(Enum):
    JSON = "json"
    PROTOBUF = "protobuf"


@dataclass(frozen=True)
class Message:
    subject: str
    headers: dict[str, str]
    body: bytes


def subject(prefix: str, event_type: int) -> str:
    """`<prefix>.<resource>.<created|updated|deleted>`, e.g. customers.customer.updated."""
    return f"{prefix}.{_SUBJECT[event_type]}"


def _subject_end(event_type: int) -> str:
    name = tmf_name(event_type)
    change = next(c for word, c in _CHANGE.items() if name.endswith(f"{word}Notification"))
    return f"{_RESOURCE[KIND_OF_TYPE[event_type]]}.{change}"


# Worked out once: each is asked for every event relayed.
_SUBJECT = {event_type: _subject_end(event_type) for event_type in KIND_OF_TYPE}
_TYPE = {event_type: TYPE_PREFIX + tmf_name(event_type) for event_type in KIND_OF_TYPE}


def message(
    event: Event, *, prefix: str, source: str, history_id: str, mode: ContentMode
) -> Message:
    kind = KIND_OF_TYPE[event.event_type]
    resource = getattr(event.event, kind)
    attributes: dict[str, Any] = {
        "id": event.event_id,
        "source": source,
        "type": _TYPE[event.event_type],
        "time": event.event_time.ToDatetime(tzinfo=UTC),
        "subject": resource.id,
        HISTORY_ATTRIBUTE: history_id,
    }
    headers = {MSG_ID: event.event_id, HISTORY_HEADER: history_id}
    if mode is ContentMode.JSON:
        attributes["datacontenttype"] = "application/json"
        # Protobuf's JSON names are TMF's (a fixed decision), so this is TMF JSON.
        data = json_format.MessageToDict(resource)
        body = _FORMAT.write(CloudEvent(attributes, data))
        headers["content-type"] = JSONFormat.CONTENT_TYPE
    else:
        attributes["datacontenttype"] = (
            f"application/protobuf; proto={resource.DESCRIPTOR.full_name}"
        )
        binary = http.to_binary(CloudEvent(attributes, resource.SerializeToString()), _FORMAT)
        headers.update(binary.headers)
        body = binary.body
    return Message(subject(prefix, event.event_type), headers, body)
