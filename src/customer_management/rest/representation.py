"""TMF JSON to protobuf messages and back, for the REST binding.

Out: protobuf's JSON mapping, which is TMF's camelCase with RFC 3339 times and amounts
as numbers. In: the same mapping walked field by field, so each problem names its JSON
path; date-times in any ISO 8601 form (a time without an offset is UTC); TMF's
annotations (`@type`, `@baseType`, `@schemaLocation`, `@referredType`) ignored, since
each resource has one type here; any other unknown attribute refused.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from customer_management.domain.errors import DomainError, FieldViolation, InvalidArgument
from customer_management.domain.validation import Violations, map_entry_path

T = TypeVar("T", bound=Message)
TIMESTAMP = "google.protobuf.Timestamp"


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def from_json(data: Any, message_type: type[T]) -> T:
    """The message `data` (parsed JSON) states; InvalidArgument naming every bad path."""
    message = message_type()
    v = Violations()
    _merge(data, message, "", v)
    v.raise_if_any()
    return message


@functools.cache
def attributes(descriptor: Any) -> dict[str, Any]:
    """A message's fields by their JSON names (`IBAN` is bank_account.iban's)."""
    return {field.json_name: field for field in descriptor.fields}


def json_path(path: str, descriptor: Any, root: str) -> str:
    """A domain violation's path (`customer.contact_medium[0].medium.email_address`) as
    the REST caller wrote it (`contactMedium[0].medium.emailAddress`)."""
    if path == root:
        return "(body)"
    out = []
    for part in path.removeprefix(root + ".").split("."):
        name, bracket, index = part.partition("[")
        field = descriptor.fields_by_name.get(name) if descriptor is not None else None
        out.append((field.json_name if field is not None else name) + bracket + index)
        descriptor = field.message_type if field is not None else None
    return ".".join(out)


def in_json_terms(error: DomainError, descriptor: Any, root: str) -> DomainError:
    """`error` with its field paths in JSON terms; other errors as they are."""
    if isinstance(error, InvalidArgument) and error.violations:
        violations = [
            FieldViolation(json_path(v.field, descriptor, root), v.description)
            for v in error.violations
        ]
        return InvalidArgument(
            error.message, error.code, error.reason, error.metadata, violations=violations
        )
    return error


def _merge(data: Any, message: Message, path: str, v: Violations) -> None:
    if not isinstance(data, dict):
        v.add(path or "(body)", "must be a JSON object")
        return
    descriptor = message.DESCRIPTOR
    for key, value in data.items():
        here = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str) or key.startswith("@"):
            continue
        field = attributes(descriptor).get(key)
        if field is None:
            v.add(here, f"is not an attribute of {descriptor.name}")
            continue
        if value is None:
            continue  # null: absent
        if _is_map(field):
            _map(value, getattr(message, field.name), field, here, v)
        elif field.is_repeated:
            if not isinstance(value, list):
                v.add(here, "must be a JSON array")
                continue
            if field.message_type is None:
                _scalar(message, field, value, here, v)
                continue
            target = getattr(message, field.name)
            for i, item in enumerate(value):
                if field.message_type.full_name == TIMESTAMP:
                    _timestamp(item, target.add(), f"{here}[{i}]", v)
                else:
                    _merge(item, target.add(), f"{here}[{i}]", v)
        elif field.message_type is None:
            _scalar(message, field, value, here, v)
        elif field.message_type.full_name == TIMESTAMP:
            _timestamp(value, getattr(message, field.name), here, v)
        else:
            child = getattr(message, field.name)
            child.SetInParent()
            _merge(value, child, here, v)


def _is_map(field: Any) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


def _map(value: Any, target: Any, field: Any, path: str, v: Violations) -> None:
    """A map of strings (descriptionI18n): a JSON object of JSON strings."""
    if not isinstance(value, dict):
        v.add(path, "must be a JSON object")
        return
    for key, text in value.items():
        if not isinstance(text, str):
            v.add(map_entry_path(path, str(key)), "must be a JSON string")
            continue
        try:
            target[key] = text
        except ValueError:  # a lone surrogate: not text protobuf can hold
            v.add(map_entry_path(path, str(key)), "is not valid Unicode text")


def _scalar(message: Message, field: Any, value: Any, path: str, v: Violations) -> None:
    if field.type == FieldDescriptor.TYPE_STRING and not isinstance(value, str | list):
        v.add(path, "must be a JSON string")
        return
    try:
        json_format.ParseDict({field.json_name: value}, message)
    except json_format.ParseError:
        v.add(path, f"must be {_KIND.get(field.type, 'a valid value')}")


_KIND = {
    FieldDescriptor.TYPE_STRING: "a JSON string",
    FieldDescriptor.TYPE_BOOL: "true or false",
    FieldDescriptor.TYPE_INT32: "a 32-bit integer",
    FieldDescriptor.TYPE_DOUBLE: "a JSON number",
}


def _timestamp(value: Any, target: Any, path: str, v: Violations) -> None:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        moment = datetime.fromisoformat(value)
        target.FromDatetime(moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment)
    except (ValueError, OverflowError):
        v.add(path, "is not an ISO 8601 date-time (2024-05-01T09:30:00Z)")
