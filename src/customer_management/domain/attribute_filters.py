"""TMF630 attribute filters, as REST query strings carry them: `status=Approved`,
`creditLimit.gt=100`, `contactMedium.medium.emailAddress=a@x.org,b@x.org`.

A parameter names an attribute by its TMF JSON path, optionally followed by one of the
operators `.gt .gte .lt .lte .ne`. Several values separated by commas are alternatives
(any of them; with `.ne`, none of them); several parameters must all hold. List turns
them into a filter of the List RPCs (one parser and one set of rules for both); hub
listeners match them against each notification's resource.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from customer_management.domain import filtering
from customer_management.domain.errors import FieldViolation, InvalidArgument
from customer_management.store.mapping import Field

OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "ne": "!="}
MAX_CRITERIA = 20
MAX_VALUES = 50


@dataclass(frozen=True)
class Criterion:
    param: str
    """The parameter as written, which errors name."""
    path: str
    op: str
    values: tuple[str, ...]

    def as_filter(self) -> str:
        """This criterion in the List filter language."""
        terms = [f"{self.path} {self.op} {json.dumps(value)}" for value in self.values]
        joined = (" AND " if self.op == "!=" else " OR ").join(terms)
        return f"({joined})" if len(terms) > 1 else joined

    def matches(self, document: Mapping[str, Any]) -> bool:
        """Whether a resource in TMF JSON satisfies it: some value at the path (inside
        lists, any element) compares as asked with one of the values."""
        found = list(_values_at(document, self.path.split(".")))
        if self.op == "!=":
            return not any(_compare(f, "=", v) for f in found for v in self.values)
        return any(_compare(f, self.op, v) for f in found for v in self.values)


def parse(pairs: Iterable[tuple[str, str]]) -> list[Criterion]:
    """The criteria of query parameters (name, value), in order."""
    criteria = []
    for name, value in pairs:
        path, _, suffix = name.rpartition(".")
        op = OPERATORS.get(suffix) if path else None
        if op is None:
            path, op = name, "="
        values = tuple(value.split(","))
        if len(values) > MAX_VALUES:
            raise _invalid(name, f"has more than {MAX_VALUES} values")
        criteria.append(Criterion(name, path, op, values))
    if len(criteria) > MAX_CRITERIA:
        raise InvalidArgument(f"at most {MAX_CRITERIA} attribute filters may be given")
    return criteria


def as_filter(criteria: Iterable[Criterion], fields: Mapping[str, Field], region: str) -> str:
    """The List filter of all the criteria; each is checked on its own first, so an error
    names the parameter that caused it."""
    parts = []
    for criterion in criteria:
        text = criterion.as_filter()
        try:
            filtering.parse(text, fields, region)
        except InvalidArgument as error:
            problems = "; ".join(v.description for v in error.violations)
            raise _invalid(criterion.param, problems) from None
        parts.append(text)
    return " AND ".join(parts)


def _invalid(param: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{param} {problem}", violations=[FieldViolation(param, problem)])


def _values_at(node: Any, path: list[str]) -> Iterable[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _values_at(item, path)
    elif not path:
        yield node
    elif isinstance(node, dict) and path[0] in node:
        yield from _values_at(node[path[0]], path[1:])


def _compare(found: Any, op: str, text: str) -> bool:
    """Numbers compare as numbers, times as instants, anything else as its JSON text."""
    left: Any
    right: Any
    if isinstance(found, bool):
        left, right = str(found).lower(), text.lower()
    elif isinstance(found, int | float):
        try:
            left, right = float(found), float(text)
        except ValueError:
            return False
    elif isinstance(found, str):
        left, right = found, text
        if (a := _instant(found)) is not None and (b := _instant(text)) is not None:
            left, right = a, b
    else:
        return False
    outcome: bool = {
        "=": left == right,
        ">": left > right,
        ">=": left >= right,
        "<": left < right,
        "<=": left <= right,
    }[op]
    return outcome


def _instant(text: str) -> datetime | None:
    if len(text) < 10 or not text[:4].isdigit():
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
