"""A stored resource as callers get it: the stored body, never parsed on the way out,
with the output-only fields (id, href, etag, times) the server sets appended after it
(protobuf merges concatenated messages)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic

from customer_management.domain.cache import DELETED, GONE
from customer_management.domain.kinds import COLLECTIONS, Kind, M
from customer_management.domain.notifications import EVENT_TYPES, Change
from customer_management.store.outbox import StoredEvent
from customer_management.store.resources import Stored
from tmf629.v1.events_pb2 import Event


def href_base(base_url: str, kind: str) -> str:
    """Where resources of `kind` live: `<base url>/<collection>/`; a resource's href is
    this and its id."""
    return f"{base_url.rstrip('/')}/{COLLECTIONS[kind]}/"


class Outputs(Generic[M]):
    """The output form of one kind's resources, for this replica's base URL."""

    def __init__(self, kind: Kind[M], base_url: str) -> None:
        self.kind = kind
        self.href_prefix = href_base(base_url, kind.kind)
        self._deleted = EVENT_TYPES[kind.kind][Change.DELETE]

    def wire(self, row: Stored) -> bytes:
        """A stored resource as it goes on the wire: its body and the output-only fields."""
        return row.body + self.tail(row.id, row.version, row.create_time, row.update_time)

    def tail(self, id: str, version: int, created: datetime, updated: datetime) -> bytes:
        """The output-only fields, serialised."""
        tail: Any = self.kind.message_type()
        tail.id = id
        tail.href = self.href_prefix + id
        tail.etag = str(version)
        tail.create_time.FromDatetime(created)
        getattr(tail, self.kind.update_time_field).FromDatetime(updated)
        return bytes(tail.SerializeToString())

    def message(self, row: Stored) -> M:
        """A stored resource as a message, output-only fields set."""
        resource = self.kind.message_type.FromString(row.body)
        out: Any = resource
        out.id = row.id
        out.href = self.href_prefix + row.id
        out.etag = str(row.version)
        out.create_time.FromDatetime(row.create_time)
        getattr(out, self.kind.update_time_field).FromDatetime(row.update_time)
        return resource

    def decode(self, stored: StoredEvent) -> tuple[int, bytes]:
        """What a change event made of its resource, as the cache keeps it: its version
        and wire form, with this replica's href (GONE if it was deleted)."""
        if stored.event_type == self._deleted:
            return DELETED, GONE
        if stored.wire:  # this process's own change
            return stored.version, stored.wire
        resource: Any = getattr(Event.FromString(stored.body).event, self.kind.kind)
        resource.href = self.href_prefix + resource.id
        return int(resource.etag), resource.SerializeToString()
