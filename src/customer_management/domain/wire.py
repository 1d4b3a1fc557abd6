"""Resources as they go on the wire, put together from bytes already serialised.

A resource is serialised once, when it is written (its stored `body`); everything else
is built around those bytes: the output-only fields are appended (protobuf merges
concatenated messages, the last value of a field winning), and a change event wraps
them as its payload field. Nothing here parses what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from tmf629.v1.events_pb2 import Event, EventPayload

EVENT_PAYLOAD = Event.DESCRIPTOR.fields_by_name["event"].number
PAYLOAD_FIELD = {field.name: field.number for field in EventPayload.DESCRIPTOR.fields}
"""By kind (customer, customer_account, payment_mean), its field in an EventPayload."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """A resource already serialised, as a method returns it: api/handlers.py sends
    `wire` as it is."""

    id: str
    wire: bytes


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def message_field(number: int, data: bytes) -> bytes:
    """A length-delimited field `number` holding the serialised message `data`."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def event(header: Event, kind: str, wire: bytes) -> bytes:
    """The event `header` (type, time, changed fields) with the resource `wire` as its
    payload: the same bytes as setting `header.event.<kind>` and serialising."""
    payload = message_field(PAYLOAD_FIELD[kind], wire)
    return bytes(header.SerializeToString()) + message_field(EVENT_PAYLOAD, payload)
