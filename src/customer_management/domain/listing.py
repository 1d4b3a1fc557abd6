"""List requests: page size, equality filters, order and opaque keyset page tokens.

The filter takes `field = literal` terms joined by AND over first-level scalars; the
full AIP-160 language comes with the query issue.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from customer_management.domain.errors import FieldViolation, InvalidArgument
from customer_management.domain.kinds import Column, Kind
from customer_management.domain.validation import MONEY_DECIMALS, Violations, money
from customer_management.store.models import ResourceRow
from customer_management.store.resources import OrderTerm

INT32 = (-(2**31), 2**31 - 1)
MAX_LITERAL = 4096
_CONTROL = re.compile(r"[\x00-\x1f]")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_FILTER_LENGTH = 2000

_VALUE = r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"']+)"""
_TERM = re.compile(rf"\s*(?P<field>[A-Za-z_][\w.]*)\s*=\s*{_VALUE}\s*")
_AND = re.compile(r"AND\s+", re.IGNORECASE)


@dataclass(frozen=True)
class ListQuery:
    page_size: int
    equals: list[tuple[str, Any]]
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
    equals = _parse_filter(kind, filter)
    order = _parse_order(kind, order_by)
    binding = hashlib.sha256(f"{kind.kind}\n{filter}\n{order_by}".encode()).hexdigest()[:16]
    after = _decode_token(kind, page_token, binding, order) if page_token else None
    return ListQuery(size, equals, order, after, binding)


def _parse_filter(kind: Kind[Any], text: str) -> list[tuple[str, Any]]:
    if len(text) > MAX_FILTER_LENGTH:
        raise _invalid("filter", f"is longer than {MAX_FILTER_LENGTH} characters")
    equals: list[tuple[str, Any]] = []
    if not text.strip():
        return equals
    position, number = 0, 1
    while True:
        match = _TERM.match(text, position)
        if match is None:
            raise _invalid(
                "filter", f"term {number} at offset {position} is not of the form field = value"
            )
        column = kind.columns_by_filter_name.get(match["field"])
        if column is None:
            known = ", ".join(sorted(kind.columns_by_filter_name))
            raise _invalid(
                "filter", f"{match['field']!r} is not a filterable field (use one of {known})"
            )
        equals.append((column.name, _literal(column, match["value"])))
        position = match.end()
        if position == len(text):
            break
        joiner = _AND.match(text, position)
        if joiner is None:
            raise _invalid("filter", f"expected AND at offset {position}")
        position, number = joiner.end(), number + 1
    return equals


def _literal(column: Column, text: str) -> Any:
    if text.startswith('"'):
        try:
            text = json.loads(text)
        except ValueError:
            raise _invalid("filter", f"{text} is not a valid string literal") from None
    elif text.startswith("'"):
        text = text[1:-1].replace("\\'", "'")
    try:
        if column.type is Decimal:
            return _money_literal(text)
        return _typed(column, text if column.type is str else _scalar(column, text))
    except (ValueError, InvalidOperation, OverflowError):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise _invalid(
            "filter", f"{shown!r} is not a valid {column.type.__name__} for {column.name}"
        ) from None


def _scalar(column: Column, text: str) -> Any:
    return int(text) if column.type is int else text


def _typed(column: Column, value: Any) -> Any:
    """`value` as the column's type, or ValueError: what filters and tokens may hold."""
    if column.type is str:
        if not isinstance(value, str) or len(value) > MAX_LITERAL or _CONTROL.search(value):
            raise ValueError(value)
        return value
    if column.type is int:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not INT32[0] <= value <= INT32[1]
        ):
            raise ValueError(value)
        return value
    if column.type is datetime:
        if not isinstance(value, str):
            raise ValueError(value)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError(value)
        return moment.astimezone(UTC)
    if column.type is Decimal:
        return _money_literal(str(value))
    raise ValueError(value)


def _money_literal(text: str) -> Decimal:
    v = Violations()
    amount = money(float(Decimal(text)), "filter", v)
    if amount is None or amount != Decimal(text):
        raise _invalid("filter", f"{text} is not an amount of at most {MONEY_DECIMALS} decimals")
    return amount


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
        column = kind.columns_by_filter_name.get(words[0])
        if column is None or not column.sortable:
            sortable = ", ".join(
                sorted(n for n, c in kind.columns_by_filter_name.items() if c.sortable)
            )
            raise _invalid("order_by", f"cannot order by {words[0]!r} (use one of {sortable})")
        terms.append(OrderTerm(column.name, len(words) == 2 and words[1].lower() == "desc"))
    return terms


def next_token(query: ListQuery, last: ResourceRow) -> str:
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
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        values = data["a"]
        if data["b"] != binding:
            raise _invalid("page_token", "was issued for a different filter or order_by")
        if not isinstance(values, list) or len(values) != len(order) + 1:
            raise ValueError
        decoded = [
            _typed(kind.columns_by_filter_name[term.column], value)
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
