"""Checks shared by every resource, collected so one answer names every bad field."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from customer_management.domain.errors import FieldViolation, InvalidArgument
from customer_management.store.mapping import exact_decimal
from tmf629.v1.common_pb2 import TimePeriod

MAX_STRING = 4096
"""Longest string any field takes (names and short codes take less, see columns)."""
MAX_REPEATED = 1000
ID_MAX = 64
"""The width of the id columns; ids are the server's UUIDs."""
KEY_MAX = 128
"""Caller-assigned unique keys, such as an account's external reference."""
MONEY_DIGITS = 12
MONEY_DECIMALS = 6
MONEY_SIGNIFICANT = 15
"""What a JSON number (a double) carries exactly; longer amounts arrive already rounded."""
# The range datetime and every database here represent.
MIN_SECONDS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp())
MAX_SECONDS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())


class Violations:
    """Collects field violations; `raise_if_any` ends validation with all of them."""

    def __init__(self) -> None:
        self._by_field: dict[str, FieldViolation] = {}

    def add(self, path: str, description: str) -> None:
        """Records the first problem of each field; later checks of it add nothing."""
        self._by_field.setdefault(path, FieldViolation(path, description))

    def require(self, path: str, present: object) -> bool:
        if not present:
            self.add(path, "is required")
            return False
        return True

    def max_length(self, path: str, value: str, limit: int) -> None:
        if len(value) > limit:
            self.add(path, f"is longer than {limit} characters")

    def non_negative(self, path: str, value: int | float) -> None:
        if value < 0:
            self.add(path, "must not be negative")

    def raise_if_any(self) -> None:
        if self._by_field:
            violations = list(self._by_field.values())
            raise InvalidArgument("the request has invalid fields", violations=violations)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def map_entry_path(path: str, key: str) -> str:
    """The path of a map's entry, as AIP-161 writes it: `description_i18n.fr`, a key
    that is not a plain word in backticks."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}.`{key.replace('`', '``')}`"


def key_problem(value: str, limit: int = ID_MAX) -> str | None:
    """Ids, request ids and external references: short and printable, so they can be
    stored, indexed and echoed safely."""
    if len(value) > limit or not value.isprintable():
        return f"must be at most {limit} printable characters"
    return None


def check_message(message: Message, path: str, v: Violations) -> None:
    """Rules every field of every message obeys: sane strings, timestamps and list sizes.

    On the path of every write, so it does the least it can. Paths are only spelt out
    for a violation. A message whose serialised form is at most MAX_STRING bytes with no
    zero byte holds no string too long and no NUL (UTF-8 keeps NUL a zero byte), so only
    its timestamps, floats and list sizes are visited, by a plan made once per type.
    """
    if message.ByteSize() <= MAX_STRING and b"\x00" not in message.SerializeToString():
        _check_planned(message, path, v)
    else:
        _check_everything(message, path, v)


def _check_everything(message: Message, path: str, v: Violations) -> None:
    for field, value in message.ListFields():
        if not field.is_repeated:
            _check_value(value, path, field.name, v)
        elif len(value) > MAX_REPEATED:
            v.add(f"{path}.{field.name}", f"has more than {MAX_REPEATED} items")
        else:
            for i, item in enumerate(value):
                _check_value(item, path, f"{field.name}[{i}]", v)


def _check_value(value: object, parent: str, name: str, v: Violations) -> None:
    if isinstance(value, str):
        if len(value) > MAX_STRING or "\x00" in value:
            here = f"{parent}.{name}"
            if "\x00" in value:
                v.add(here, "must not contain NUL characters")
            v.max_length(here, value, MAX_STRING)
    elif isinstance(value, Timestamp):
        if not representable(value):
            v.add(f"{parent}.{name}", "is not a valid timestamp (years 1 to 9999)")
    elif isinstance(value, Message):
        _check_everything(value, f"{parent}.{name}", v)
    elif isinstance(value, float) and not math.isfinite(value):
        v.add(f"{parent}.{name}", "must be a finite number")


# A plan: for each field that can break a rule other than a string's, its name, whether it
# is repeated, the plan of its message type (None: a value to check as it is) and whether
# it has presence (a value to check only when set).
_Plan = tuple[tuple[str, bool, "_Plan | None", bool], ...]
_PLANS: dict[str, _Plan] = {}
_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def _plan(descriptor: Any) -> _Plan:
    plan = _PLANS.get(descriptor.full_name)
    if plan is None:
        _PLANS[descriptor.full_name] = ()  # a recursive type sees itself as planned
        steps: list[tuple[str, bool, _Plan | None, bool]] = []
        for field in descriptor.fields:
            repeated, presence = field.is_repeated, field.has_presence
            if field.message_type is not None and field.message_type.full_name != _TIMESTAMP:
                inner = _plan(field.message_type)
                if inner or repeated:
                    steps.append((field.name, repeated, inner, presence))
            elif field.message_type is not None or field.type in _FLOATS or repeated:
                steps.append((field.name, repeated, None, presence))
        plan = _PLANS[descriptor.full_name] = tuple(steps)
    return plan


def _check_planned(message: Message, path: str, v: Violations, plan: _Plan | None = None) -> None:
    for name, repeated, inner, presence in plan or _plan(message.DESCRIPTOR):
        if repeated:
            items = getattr(message, name)
            if not items:
                continue
            if len(items) > MAX_REPEATED:
                v.add(f"{path}.{name}", f"has more than {MAX_REPEATED} items")
            elif inner is None:
                for i, item in enumerate(items):
                    _check_value(item, path, f"{name}[{i}]", v)
            elif inner:
                for i, item in enumerate(items):
                    _check_planned(item, f"{path}.{name}[{i}]", v, inner)
        elif inner is None:
            if not presence or message.HasField(name):
                _check_value(getattr(message, name), path, name, v)
        elif message.HasField(name):
            _check_planned(getattr(message, name), f"{path}.{name}", v, inner)


def representable(value: Timestamp) -> bool:
    return MIN_SECONDS <= value.seconds <= MAX_SECONDS and 0 <= value.nanos < 1_000_000_000


def check_period(period: TimePeriod, path: str, v: Violations) -> None:
    if (
        period.HasField("start_date_time")
        and period.HasField("end_date_time")
        and _instant(period.end_date_time) < _instant(period.start_date_time)
    ):
        v.add(f"{path}.end_date_time", "must not precede start_date_time")


def _instant(value: Timestamp) -> tuple[int, int]:
    return value.seconds, value.nanos


def money(value: float, path: str, v: Violations, *, negative: bool = True) -> Decimal | None:
    """The exact decimal a JSON number means: its shortest round-trip form."""
    if not math.isfinite(value):
        return None  # check_message reports it
    amount = Decimal(repr(value))
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MONEY_DECIMALS:
        v.add(path, f"has more than {MONEY_DECIMALS} decimal places")
        return None
    if len(amount.normalize().as_tuple().digits) > MONEY_SIGNIFICANT:
        v.add(
            path,
            f"has more than {MONEY_SIGNIFICANT} significant digits, which a JSON number "
            "cannot carry exactly",
        )
        return None
    if abs(amount) >= Decimal(10) ** MONEY_DIGITS:
        v.add(path, f"must be less than 10^{MONEY_DIGITS} in magnitude")
        return None
    if not negative and amount < 0:
        v.add(path, "must not be negative")
        return None
    return exact_decimal(value)


def timestamp(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)
