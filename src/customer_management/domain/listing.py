"""List requests: page size, filter, order, field selection and opaque keyset page tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from customer_management.domain import filtering
from customer_management.domain.errors import FieldViolation, InvalidArgument
from customer_management.domain.kinds import Kind
from customer_management.store.query import Condition, OrderTerm
from customer_management.store.resources import Listed

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class ListQuery:
    page_size: int
    condition: Condition | None
    order: list[OrderTerm]
    after: list[Any] | None
    binding: str
    """Ties a page token to the filter and order it was issued for."""


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field} {description}", violations=[FieldViolation(field, description)]
    )


def parse(
    kind: Kind[Any], page_size: int, page_token: str, filter: str, order_by: str
) -> ListQuery:
    if page_size < 0:
        raise _invalid("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    condition = filtering.parse(filter, kind.fields, kind.phone_region)
    order = _parse_order(kind, order_by)
    binding = hashlib.sha256(f"{kind.kind}\n{filter}\n{order_by}".encode()).hexdigest()[:16]
    after = _decode_token(kind, page_token, binding, order) if page_token else None
    return ListQuery(size, condition, order, after, binding)


def _parse_order(kind: Kind[Any], text: str) -> list[OrderTerm]:
    if not text.strip():
        return []
    terms = []
    for part in text.split(","):
        words = part.split()
        if (
            not words
            or len(words) > 2
            or (len(words) == 2 and words[1].lower() not in ("asc", "desc"))
        ):
            raise _invalid("order_by", f"{part.strip()!r} is not of the form `field [asc|desc]`")
        field = kind.fields.get(words[0])
        if field is None or not field.sortable:
            sortable = ", ".join(
                sorted(n for n, f in kind.fields.items() if f.sortable and "_" not in n)
            )
            raise _invalid("order_by", f"cannot order by {words[0]!r} (use one of {sortable})")
        descending = len(words) == 2 and words[1].lower() == "desc"
        terms.append(OrderTerm(field.column, descending, field.nullable))
    return terms


def next_token(query: ListQuery, last: Listed) -> str:
    values = [_encode(getattr(last, term.column)) for term in query.order] + [last.pk]
    data = json.dumps({"b": query.binding, "a": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _decode_token(kind: Kind[Any], token: str, binding: str, order: list[OrderTerm]) -> list[Any]:
    by_column = {field.column: field for field in kind.fields.values() if field.sortable}
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        values = data["a"]
        if data["b"] != binding:
            raise _invalid("page_token", "was issued for a different filter or order_by")
        if not isinstance(values, list) or len(values) != len(order) + 1:
            raise ValueError
        decoded = [
            None
            if value is None and term.nullable
            else filtering.typed(by_column[term.column], value)
            for term, value in zip(order, values, strict=False)
        ]
        pk = values[-1]
        if not isinstance(pk, int) or not 0 <= pk < 2**63:
            raise ValueError(pk)
        return [*decoded, pk]
    except InvalidArgument:
        raise
    except (ValueError, KeyError, TypeError, OverflowError, InvalidOperation, binascii.Error):
        raise _invalid("page_token", "is not a token this service issued") from None
