"""The field-level history of every resource: who changed which field, from what to what.

Each change stores the resource's form before and after it (store/history.py), in the
change's own transaction; the field changes are worked out here when the history is
read, so a write pays for one more row in its batch and nothing else. Secrets never get
there: a PIN is never in a stored form (only that it changed is kept), card numbers are
stored masked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from sqlalchemy.orm import Session

from customer_management.domain.errors import FieldViolation, InvalidArgument
from customer_management.domain.ids import require_id
from customer_management.domain.kinds import Kind
from customer_management.domain.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from customer_management.domain.notifications import Change
from customer_management.domain.validation import map_entry_path, representable
from customer_management.store import history as store
from customer_management.store.database import Database
from tmf629.v1.history_pb2 import (
    ChangeKind,
    ListChangesRequest,
    ListChangesResponse,
    ResourceChange,
    ResourceType,
)

CHANGE_KINDS = {
    Change.CREATE: ChangeKind.CHANGE_KIND_CREATE,
    Change.UPDATE: ChangeKind.CHANGE_KIND_UPDATE,
    Change.DELETE: ChangeKind.CHANGE_KIND_DELETE,
}
UNSHOWN = frozenset({"createdBy", "updatedBy"})
"""Top-level fields every change sets: the entry's caller says it once."""
SCAN_MAX = 5000
"""Rows one page reads at most looking for changes of the asked fields; a page that
found fewer than it wanted ends there, with a token to go on."""
MAX_PAGE_BYTES = 3 * 1024 * 1024
"""A page also ends before it outgrows what a default client accepts (4 MiB): creates
and deletes carry whole resources."""
MAX_FIELD_PATHS = 100
_ABSENT: Any = object()


def resource_type(kind: str) -> ResourceType.ValueType:
    return ResourceType.Value(f"RESOURCE_TYPE_{kind.upper()}")


@dataclass(frozen=True)
class _Query:
    kind: Kind[Any]
    resource_id: str
    page_size: int
    below: int | None
    start: datetime | None
    end: datetime | None
    paths: tuple[str, ...]
    binding: str


class History:
    """ListChanges: one resource's history, newest first. Nothing writes through here."""

    def __init__(self, database: Database, kinds: Sequence[Kind[Any]]) -> None:
        self.database = database
        self.kinds = {resource_type(kind.kind): kind for kind in kinds}

    async def list(self, request: ListChangesRequest) -> ListChangesResponse:
        query = self._parse(request)

        def unit(session: Session) -> ListChangesResponse:
            response = ListChangesResponse()
            below = query.below  # every row below it is still to be read
            limit = query.page_size + 1 if not query.paths else 200
            scanned = size = 0
            while scanned < SCAN_MAX:
                rows = store.page(
                    session,
                    query.kind.kind,
                    query.resource_id,
                    below=below,
                    start=query.start,
                    end=query.end,
                    limit=limit,
                )
                for row in rows:
                    entry = _entry(query.kind, row, query.paths)
                    if entry is not None:
                        size += entry.ByteSize()
                        full = len(response.changes) == query.page_size
                        if full or (response.changes and size > MAX_PAGE_BYTES):
                            response.next_page_token = _token(below, query.binding)
                            return response
                        response.changes.append(entry)
                    below = row.seq
                    scanned += 1
                if len(rows) < limit:
                    return response
            response.next_page_token = _token(below, query.binding)
            return response

        return await self.database.read(unit)

    def _parse(self, request: ListChangesRequest) -> _Query:
        kind = self.kinds.get(request.resource_type)
        if kind is None:
            raise _invalid(
                "resource_type",
                "must be one of " + ", ".join(ResourceType.Name(t) for t in self.kinds),
            )
        require_id(request.resource_id, "resource_id")
        if request.page_size < 0:
            raise _invalid("page_size", "must not be negative")
        start = _time(request, "start_time")
        end = _time(request, "end_time")
        if start is not None and end is not None and end < start:
            raise _invalid("end_time", "must not precede start_time")
        if len(request.field_paths) > MAX_FIELD_PATHS:
            raise _invalid("field_paths", f"names more than {MAX_FIELD_PATHS} paths")
        paths = tuple(
            dict.fromkeys(_field_path(kind.message_type.DESCRIPTOR, p) for p in request.field_paths)
        )
        binding = hashlib.sha256(
            json.dumps([kind.kind, request.resource_id, str(start), str(end), paths]).encode()
        ).hexdigest()[:16]
        below = _decode(request.page_token, binding) if request.page_token else None
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return _Query(kind, request.resource_id, size, below, start, end, paths, binding)


def _entry(kind: Kind[Any], row: store.Change, paths: tuple[str, ...]) -> ResourceChange | None:
    """The history entry of a row, with only the changes of `paths` (all: empty); None
    when it changed none of them."""
    descriptor = kind.message_type.DESCRIPTOR
    changes: list[tuple[str, Any, Any]] = []
    _diff_message(_json(kind, row.before), _json(kind, row.after), descriptor, "", changes)
    secrets = row.secrets.split()
    if paths:
        changes = [c for c in changes if any(_within(c[0], p) for p in paths)]
        secrets = [s for s in secrets if any(_within(s, p) for p in paths)]
        if not changes and not secrets:
            return None
    entry = ResourceChange(
        change_id=str(row.seq),
        caller=row.caller,
        change_kind=row.change_kind,  # type: ignore[arg-type]
        resource_type=resource_type(kind.kind),
        resource_id=row.resource_id,
        etag=str(row.version),
    )
    entry.change_time.FromDatetime(row.change_time)
    for path, before, after in changes:
        field = entry.field_changes.add(path=path)
        if before is not _ABSENT:
            json_format.ParseDict(before, field.before)
        if after is not _ABSENT:
            json_format.ParseDict(after, field.after)
    for path in secrets:
        entry.field_changes.add(path=path, redacted=True)
    return entry


def _json(kind: Kind[Any], body: bytes | None) -> dict[str, Any]:
    if body is None:
        return {}
    found = json_format.MessageToDict(kind.message_type.FromString(body))
    return {name: value for name, value in found.items() if name not in UNSHOWN}


def _diff_message(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    descriptor: Descriptor,
    path: str,
    out: list[tuple[str, Any, Any]],
) -> None:
    for field in descriptor.fields:  # in field order
        name = field.json_name
        if name in before or name in after:
            here = f"{path}.{name}" if path else name
            _diff_field(before.get(name, _ABSENT), after.get(name, _ABSENT), field, here, out)


def _diff_field(
    before: Any, after: Any, field: FieldDescriptor, path: str, out: list[tuple[str, Any, Any]]
) -> None:
    if before == after:
        return
    if before is _ABSENT or after is _ABSENT:
        out.append((path, before, after))
    elif field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        for key in sorted(set(before) | set(after)):
            here = map_entry_path(path, key)
            _diff_value(before.get(key, _ABSENT), after.get(key, _ABSENT), value, here, out)
    elif field.is_repeated:
        for i in range(max(len(before), len(after))):
            _diff_value(
                before[i] if i < len(before) else _ABSENT,
                after[i] if i < len(after) else _ABSENT,
                field,
                f"{path}[{i}]",
                out,
            )
    else:
        _diff_value(before, after, field, path, out)


def _diff_value(
    before: Any, after: Any, field: FieldDescriptor, path: str, out: list[tuple[str, Any, Any]]
) -> None:
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict) and field.message_type is not None:
        _diff_message(before, after, field.message_type, path, out)
    else:
        out.append((path, before, after))


_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")


def _field_path(descriptor: Descriptor, text: str) -> str:
    """A field path in TMF JSON names (`contactMedium[0].medium`), from JSON or proto
    names; its first field must be the resource's."""
    parts = []
    for i, segment in enumerate(text.split(".")):
        match = _SEGMENT.match(segment)
        if match is None:
            raise _invalid("field_paths", f"{text!r} is not a field path")
        name, index = match.groups()
        camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)
        if i == 0 and not any(camel == f.json_name for f in descriptor.fields):
            raise _invalid("field_paths", f"{text!r} names no field of {descriptor.name}")
        parts.append(camel + index)
    return ".".join(parts)


def _within(path: str, wanted: str) -> bool:
    """Whether a change of `path` is one of `wanted`: the same field, one inside it, or
    one holding it (a create sets a whole list at once)."""
    shorter, longer = sorted((path, wanted), key=len)
    return longer == shorter or longer.startswith((shorter + ".", shorter + "["))


def _time(request: ListChangesRequest, name: Literal["start_time", "end_time"]) -> datetime | None:
    if not request.HasField(name):
        return None
    value = getattr(request, name)
    if not representable(value):
        raise _invalid(name, "is not a valid timestamp (years 1 to 9999)")
    return value.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


TOKEN_MAX = 256


def _token(below: int | None, binding: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([below, binding]).encode()).decode()


def _decode(token: str, binding: str) -> int:
    try:
        if len(token) > TOKEN_MAX:
            raise ValueError
        below, bound = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, RecursionError, binascii.Error, UnicodeError) as error:
        raise _invalid("page_token", "is not a token this service issued") from error
    if bound != binding:
        raise _invalid("page_token", "was issued for another resource or filter")
    if type(below) is not int or not 0 < below < 2**63:
        raise _invalid("page_token", "is not a token this service issued")
    return below


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field} {description}", violations=[FieldViolation(field, description)]
    )
