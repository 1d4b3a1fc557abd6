"""What the service needs to know of each resource kind; one subclass per kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from google.protobuf.message import Message

from customer_management.domain.validation import Violations, check_period
from customer_management.store.models import Base
from tmf629.v1.common_pb2 import ContactMedium, RelatedParty

M = TypeVar("M", bound=Message)

DEFAULT_STATUS = "Created"
COLLECTIONS = {
    "customer": "customer",
    "customer_account": "customerAccount",
    "payment_mean": "paymentMean",
}
"""Each kind's href path segment, as in TMF's REST binding."""
NAME_MAX = 1024
CODE_MAX = 256
"""Status, type and other short codes that are stored in their own columns."""


@dataclass(frozen=True)
class RefSlot:
    """A reference inside a resource: `ref.id` must name an existing `kind`."""

    path: str
    kind: str
    ref: Any


@dataclass(frozen=True)
class Column:
    """A first-level scalar that List can filter and order on."""

    name: str
    type: type
    sortable: bool = True


class Kind(Generic[M]):
    kind: ClassVar[str]
    """Table and reference name: customer, customer_account, payment_mean."""
    field: ClassVar[str]
    """The request field holding the resource; the root of every violation path."""
    message_type: type[M]
    update_time_field: ClassVar[str] = "update_time"
    columns_by_filter_name: ClassVar[Mapping[str, Column]]

    def check(self, resource: M, previous: M | None, v: Violations) -> None:
        """Adds a violation for every rule of this kind `resource` breaks."""
        raise NotImplementedError

    def references(self, resource: M) -> list[RefSlot]:
        raise NotImplementedError

    def columns(self, resource: M) -> dict[str, Any]:
        """The row's searchable columns; called only on a valid resource."""
        raise NotImplementedError

    def children(self, resource: M) -> dict[type[Base], list[dict[str, Any]]]:
        return {}


def columns_index(*columns: Column, aliases: Mapping[str, str] = {}) -> dict[str, Column]:
    """Filter names: each column's snake_case name, its camelCase JSON name, and aliases."""
    index: dict[str, Column] = {}
    for column in columns:
        index[column.name] = column
        head, *rest = column.name.split("_")
        index[head + "".join(part.title() for part in rest)] = column
    for alias, name in aliases.items():
        index[alias] = index[name]
    return index


def check_contact_medium(media: Any, path: str, v: Violations) -> None:
    for i, medium in enumerate(media):
        assert isinstance(medium, ContactMedium)
        here = f"{path}[{i}]"
        v.require(f"{here}.type", medium.type)
        v.require(f"{here}.medium", medium.HasField("medium"))
        check_period(medium.valid_for, f"{here}.valid_for", v)


def check_related_party(party: RelatedParty, path: str, v: Violations) -> None:
    check_period(party.valid_for, f"{path}.valid_for", v)


def check_status(resource: Any, path: str, v: Violations) -> None:
    """A missing status gets the default lifecycle state."""
    if not resource.status:
        resource.status = DEFAULT_STATUS
    v.max_length(f"{path}.status", resource.status, CODE_MAX)
