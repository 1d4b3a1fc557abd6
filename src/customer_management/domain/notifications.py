"""The nine TMF629 notifications and this service's three for credit categories: which
one a change is, and what its event carries."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import Enum

from google.protobuf.message import Message

from tmf629.v1.events_pb2 import Event, EventType


class Change(Enum):
    CREATE = "Create"
    UPDATE = "Update"
    DELETE = "Delete"


# By kind (also the name of the resource's field in the event payload), then change.
EVENT_TYPES: dict[str, dict[Change, EventType.ValueType]] = {
    "customer": {
        Change.CREATE: EventType.EVENT_TYPE_CUSTOMER_CREATE_NOTIFICATION,
        Change.UPDATE: EventType.EVENT_TYPE_CUSTOMER_UPDATE_NOTIFICATION,
        Change.DELETE: EventType.EVENT_TYPE_CUSTOMER_DELETE_NOTIFICATION,
    },
    "customer_account": {
        Change.CREATE: EventType.EVENT_TYPE_CUSTOMER_ACCOUNT_CREATE_NOTIFICATION,
        Change.UPDATE: EventType.EVENT_TYPE_CUSTOMER_ACCOUNT_UPDATE_NOTIFICATION,
        Change.DELETE: EventType.EVENT_TYPE_CUSTOMER_ACCOUNT_DELETE_NOTIFICATION,
    },
    "payment_mean": {
        Change.CREATE: EventType.EVENT_TYPE_PAYMENT_MEAN_CREATE_NOTIFICATION,
        Change.UPDATE: EventType.EVENT_TYPE_PAYMENT_MEAN_UPDATE_NOTIFICATION,
        Change.DELETE: EventType.EVENT_TYPE_PAYMENT_MEAN_DELETE_NOTIFICATION,
    },
    "credit_category": {  # beyond TMF629's nine, appended to the enum
        Change.CREATE: EventType.EVENT_TYPE_CREDIT_CATEGORY_CREATE_NOTIFICATION,
        Change.UPDATE: EventType.EVENT_TYPE_CREDIT_CATEGORY_UPDATE_NOTIFICATION,
        Change.DELETE: EventType.EVENT_TYPE_CREDIT_CATEGORY_DELETE_NOTIFICATION,
    },
}
KIND_OF_TYPE: dict[int, str] = {
    event_type: kind for kind, types in EVENT_TYPES.items() for event_type in types.values()
}


def tmf_name(event_type: int) -> str:
    """TMF's name of an event type: EVENT_TYPE_CUSTOMER_CREATE_NOTIFICATION is
    CustomerCreateNotification."""
    words = EventType.Name(event_type).removeprefix("EVENT_TYPE_").split("_")  # type: ignore[arg-type]
    return "".join(word.capitalize() for word in words)


TYPE_OF_TMF_NAME: dict[str, int] = {tmf_name(t): t for t in KIND_OF_TYPE}


def header(kind: str, change: Change, time: datetime, changed: Iterable[str] = ()) -> Event:
    """The event of a change without its resource (wire.event adds it) and without its
    event_id (the outbox assigns it)."""
    built = Event(event_type=EVENT_TYPES[kind][change])
    built.event_time.FromDatetime(time)
    if changed:  # a create or delete has no changed_fields at all
        built.changed_fields.paths.extend(changed)
    return built


def changed_fields(before: Message, after: Message) -> list[str]:
    """The first-level fields whose value differs, in declaration order."""
    changed = []
    for field in after.DESCRIPTOR.fields:
        name = field.name
        if getattr(before, name) != getattr(after, name) or (
            field.has_presence and before.HasField(name) != after.HasField(name)
        ):
            changed.append(name)
    return changed
