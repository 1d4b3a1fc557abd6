"""What the service needs to know of each resource kind; one subclass per kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from email_validator import EmailNotValidError
from google.protobuf.message import Message

from customer_management.domain import emails
from customer_management.domain.validation import Violations, check_period
from customer_management.store.mapping import Field
from customer_management.store.mapping import Mapping as StoredMapping
from customer_management.store.search_keys import e164
from tmf629.v1.common_pb2 import ContactMedium, RelatedParty

M = TypeVar("M", bound=Message)

DEFAULT_STATUS = "Created"
COLLECTIONS = {
    "customer": "customer",
    "customer_account": "customerAccount",
    "payment_mean": "paymentMean",
    "credit_category": "creditCategory",
}
"""Each kind's href path segment, as in TMF's REST binding."""
NAME_MAX = 1024
NAME_MAX_BYTES = 2048
"""A name is indexed; a PostgreSQL B-tree entry holds at most about 2.7 kB."""
CODE_MAX = 256
"""Status, type and other short codes that are stored in their own columns."""
EMAIL_MAX = 320
PHONE_MAX = 64
VALUE_MAX = 512
"""Characteristic values are indexed too."""


@dataclass(frozen=True)
class RefSlot:
    """A reference inside a resource: `ref.<key>` (its id, or a key that never changes,
    such as a credit category's code) must name an existing `kind`."""

    path: str
    kind: str
    ref: Any
    key: str = "id"

    @property
    def value(self) -> str:
        return str(getattr(self.ref, self.key))


class Kind(Generic[M]):
    kind: ClassVar[str]
    """Table and reference name: customer, customer_account, payment_mean."""
    field: ClassVar[str]
    """The request field holding the resource; the root of every violation path."""
    message_type: type[M]
    update_time_field: ClassVar[str] = "update_time"
    stored: ClassVar[StoredMapping[Any]]
    """How its resources are stored (store/mapping.py)."""
    fields: ClassVar[Mapping[str, Field]]
    """What List filters and orders on, by filter name: `stored.fields`."""
    phone_region: str = ""
    """Where national telephone numbers are (ISO 3166 code); empty: numbers need their
    country code."""
    unique: ClassVar[tuple[str, ...]] = ()
    """Optional caller-assigned keys (columns named as their fields) no two resources share;
    Get finds a resource by them."""

    def screen(self, resource: M) -> None:
        """Refuses what the caller sent before anything of it is kept; fields this version
        does not know are dropped right after (they could hold anything)."""

    def check(self, resource: M, previous: M | None, v: Violations) -> None:
        """Adds a violation for every rule of this kind `resource` breaks."""
        raise NotImplementedError

    def references(self, resource: M) -> list[RefSlot]:
        raise NotImplementedError


def check_name(resource: Any, path: str, v: Violations) -> None:
    if v.require(f"{path}.name", resource.name):
        v.max_length(f"{path}.name", resource.name, NAME_MAX)
        if len(resource.name.encode()) > NAME_MAX_BYTES:
            v.add(f"{path}.name", f"is longer than {NAME_MAX_BYTES} bytes in UTF-8")


def check_contact_medium(
    media: Any, path: str, v: Violations, region: str = "", previous: Any = ()
) -> None:
    """`previous`: the media as stored before an update. One found there unchanged was
    checked and normalised when it was written: its address and number are not parsed
    again, which would cost an update that leaves them alone most of its time."""
    for i, medium in enumerate(media):
        assert isinstance(medium, ContactMedium)
        here = f"{path}[{i}]"
        if v.require(f"{here}.type", medium.type):
            v.max_length(f"{here}.type", medium.type, CODE_MAX)
        v.require(f"{here}.medium", medium.HasField("medium"))
        v.max_length(f"{here}.medium.email_address", medium.medium.email_address, EMAIL_MAX)
        v.max_length(f"{here}.medium.number", medium.medium.number, PHONE_MAX)
        if medium in previous:
            continue
        if medium.medium.email_address:
            check_email(medium.medium, f"{here}.medium.email_address", v)
        if medium.medium.number:
            check_phone(medium.medium, f"{here}.medium.number", v, region)
        check_period(medium.valid_for, f"{here}.valid_for", v)


def check_email(medium: Any, path: str, v: Violations) -> None:
    """Validates an email address (syntax only, no DNS) and keeps its normalised form."""
    try:
        medium.email_address = emails.normalized(medium.email_address)
    except EmailNotValidError as error:
        v.add(path, f"is not a valid email address: {error}")


def check_phone(medium: Any, path: str, v: Violations, region: str) -> None:
    """Validates a telephone number (phonenumbers) and keeps it in E.164."""
    number = e164(medium.number, region)
    if number is None:
        where = f"or a number of region {region}" if region else "(+country code …)"
        v.add(path, f"is not a telephone number in international form {where}")
        return
    medium.number = number


def check_related_party(party: RelatedParty, path: str, v: Violations) -> None:
    v.max_length(f"{path}.id", party.id, CODE_MAX)
    v.max_length(f"{path}.role", party.role, CODE_MAX)
    check_period(party.valid_for, f"{path}.valid_for", v)


def check_status(resource: Any, path: str, v: Violations) -> None:
    """A missing status gets the default lifecycle state."""
    if not resource.status:
        resource.status = DEFAULT_STATUS
    v.max_length(f"{path}.status", resource.status, CODE_MAX)
