"""How each kind is stored: the searchable columns of its row, the rows of its child
tables, and the column each List filter name reads. Called only on valid resources."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from customer_management.store import query
from customer_management.store.models import (
    AccountBalanceRow,
    AccountRelationshipLink,
    Base,
    CharacteristicRow,
    ContactMediumRow,
    CustomerAccountLink,
    CustomerPaymentMeanLink,
    PaymentPlanRow,
)
from customer_management.store.search_keys import email_key, phone_key
from tmf629.v1.common_pb2 import TimePeriod
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.payment_mean_pb2 import PaymentMean

M = TypeVar("M", bound=Message)
Children = dict[type[Base], list[dict[str, Any]]]


@dataclass(frozen=True)
class Field:
    """A field List can filter on: where it is stored and how its literals are read."""

    column: str
    value_type: type
    child: type[Base] | None = None
    """The child table holding it, for a field inside a repeated message."""
    nullable: bool = False
    key: Callable[[str, str], str | None] | None = None
    """Normalises values before they are compared (see store.search_keys)."""
    text: bool = False
    """Free text: compared for equality only, never ordered."""

    @property
    def stored(self) -> query.Column:
        return query.Column(self.column, self.child, self.nullable)

    @property
    def sortable(self) -> bool:
        return self.child is None and not self.text


def fields_index(*, named: bool = True, **extra: Field) -> dict[str, Field]:
    """Filter names: the fields every resource has (and `name`, TMF's display name, for
    TMF's resources) plus `extra` (given by TMF JSON path with `__` for `.`), each also
    under its proto (snake_case) path."""
    fields = {
        "id": Field("id", str),
        **({"name": Field("name", str)} if named else {}),
        "createTime": Field("create_time", datetime),
        **{path.replace("__", "."): field for path, field in extra.items()},
    }
    index: dict[str, Field] = {}
    for path, field in fields.items():
        index[path] = field
        index[".".join(_CAMEL_HUMP.sub(r"_\1", part).lower() for part in path.split("."))] = field
    return index


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")


def exact_decimal(value: float) -> Decimal:
    """The exact decimal a JSON number means: its shortest round-trip form."""
    amount = Decimal(repr(value))
    exponent = amount.as_tuple().exponent
    return amount.normalize() if isinstance(exponent, int) and exponent < 0 else amount


class Mapping(Generic[M]):
    """One kind's storage; `child_fields` are the fields `children` reads (an update
    that changes none of them keeps the child rows)."""

    fields: dict[str, Field]
    child_fields: frozenset[str] = frozenset()

    def columns(self, resource: M) -> dict[str, Any]:
        raise NotImplementedError

    def children(self, resource: M, phone_region: str) -> Children:
        return {}


def _related_party(resource: Any) -> dict[str, str | None]:
    party = resource.related_party
    return {"related_party_id": party.id or None, "related_party_role": party.role or None}


def period_bounds(period: TimePeriod) -> tuple[datetime | None, datetime | None]:
    """A period's start and end as stored (UTC), None where it has none."""
    start = period.start_date_time if period.HasField("start_date_time") else None
    end = period.end_date_time if period.HasField("end_date_time") else None
    return (
        start.ToDatetime(tzinfo=UTC) if start is not None else None,
        end.ToDatetime(tzinfo=UTC) if end is not None else None,
    )


def _amount(message: Any, name: str) -> Decimal | None:
    return exact_decimal(getattr(message, name)) if message.HasField(name) else None


class CustomerMapping(Mapping[Customer]):
    child_fields = frozenset(
        {"customer_account", "payment_mean", "contact_medium", "characteristic"}
    )
    fields = fields_index(
        updateTime=Field("update_time", datetime),
        status=Field("status", str),
        description=Field("description", str, text=True),
        customerRank=Field("customer_rank", int, nullable=True),
        validFor__startDateTime=Field("valid_for_start", datetime, nullable=True),
        validFor__endDateTime=Field("valid_for_end", datetime, nullable=True),
        relatedParty__id=Field("related_party_id", str, nullable=True),
        relatedParty__role=Field("related_party_role", str, nullable=True),
        contactMedium__type=Field("type", str, ContactMediumRow),
        contactMedium__preferred=Field("preferred", bool, ContactMediumRow),
        contactMedium__medium__emailAddress=Field(
            "email", str, ContactMediumRow, nullable=True, key=email_key
        ),
        contactMedium__medium__number=Field(
            "number", str, ContactMediumRow, nullable=True, key=phone_key
        ),
        characteristic__name=Field("name", str, CharacteristicRow),
        characteristic__value=Field("value", str, CharacteristicRow),
        customerAccount__id=Field("account_id", str, CustomerAccountLink),
        paymentMean__id=Field("payment_mean_id", str, CustomerPaymentMeanLink),
    )

    def columns(self, resource: Customer) -> dict[str, Any]:
        start, end = period_bounds(resource.valid_for)
        return {
            "name": resource.name,
            "status": resource.status,
            "description": resource.description,
            "customer_rank": (
                resource.customer_rank if resource.HasField("customer_rank") else None
            ),
            "valid_for_start": start,
            "valid_for_end": end,
            **_related_party(resource),
        }

    def children(self, resource: Customer, phone_region: str) -> Children:
        return {
            CustomerAccountLink: [
                {"position": i, "account_id": ref.id}
                for i, ref in enumerate(resource.customer_account)
            ],
            CustomerPaymentMeanLink: [
                {"position": i, "payment_mean_id": ref.id}
                for i, ref in enumerate(resource.payment_mean)
            ],
            ContactMediumRow: [
                {
                    "position": i,
                    "type": medium.type,
                    "preferred": medium.preferred,
                    "email": email_key(medium.medium.email_address),
                    "number": phone_key(medium.medium.number, phone_region),
                }
                for i, medium in enumerate(resource.contact_medium)
            ],
            CharacteristicRow: [
                {"position": i, "name": characteristic.name, "value": characteristic.value}
                for i, characteristic in enumerate(resource.characteristic)
            ],
        }


class CustomerAccountMapping(Mapping[CustomerAccount]):
    child_fields = frozenset(
        {"payment_plan", "customer_account_balance", "customer_account_relationship"}
    )
    fields = fields_index(
        lastModified=Field("update_time", datetime),
        status=Field("status", str),
        description=Field("description", str, text=True),
        accountType=Field("account_type", str),
        creditLimit=Field("credit_limit", Decimal, nullable=True),
        receivableBalance=Field("receivable_balance", Decimal, nullable=True),
        externalReference=Field("external_reference", str, nullable=True),
        customer__id=Field("customer_id", str, nullable=True),
        creditCategory__code=Field("credit_category_code", str, nullable=True),
        customerAccountRelationship__relationshipType=Field(
            "relationship_type", str, AccountRelationshipLink
        ),
        customerAccountRelationship__customerAccount__id=Field(
            "related_account_id", str, AccountRelationshipLink
        ),
        paymentPlan__status=Field("status", str, PaymentPlanRow),
        paymentPlan__paymentMean__id=Field("payment_mean_id", str, PaymentPlanRow),
    )

    def columns(self, resource: CustomerAccount) -> dict[str, Any]:
        return {
            "name": resource.name,
            "account_type": resource.account_type,
            "status": resource.status,
            "description": resource.description,
            "credit_limit": _amount(resource, "credit_limit"),
            "receivable_balance": _amount(resource, "receivable_balance"),
            "customer_id": resource.customer.id if resource.HasField("customer") else None,
            "external_reference": resource.external_reference or None,
            "credit_category_code": (
                resource.credit_category.code if resource.HasField("credit_category") else None
            ),
        }

    def children(self, resource: CustomerAccount, phone_region: str) -> Children:
        links: list[dict[str, Any]] = []
        for relationship in resource.customer_account_relationship:
            for ref in relationship.customer_account:
                links.append(
                    {
                        "position": len(links),
                        "related_account_id": ref.id,
                        "relationship_type": relationship.relationship_type,
                    }
                )
        return {
            AccountRelationshipLink: links,
            PaymentPlanRow: [
                {
                    "position": i,
                    "payment_mean_id": plan.payment_mean.id,
                    "status": plan.status,
                    "amount": _amount(plan, "amount"),
                }
                for i, plan in enumerate(resource.payment_plan)
            ],
            AccountBalanceRow: [
                {
                    "position": i,
                    "type": balance.type,
                    "status": balance.status,
                    "amount": _amount(balance, "amount"),
                }
                for i, balance in enumerate(resource.customer_account_balance)
            ],
        }


class PaymentMeanMapping(Mapping[PaymentMean]):
    fields = fields_index(
        updateTime=Field("update_time", datetime),
        type=Field("type", str),
        validFor__startDateTime=Field("valid_for_start", datetime, nullable=True),
        validFor__endDateTime=Field("valid_for_end", datetime, nullable=True),
        relatedParty__id=Field("related_party_id", str, nullable=True),
        relatedParty__role=Field("related_party_role", str, nullable=True),
    )

    def columns(self, resource: PaymentMean) -> dict[str, Any]:
        start, end = period_bounds(resource.valid_for)
        return {
            "name": resource.name,
            "type": resource.type,
            "valid_for_start": start,
            "valid_for_end": end,
            **_related_party(resource),
        }


class CreditCategoryMapping(Mapping[CreditCategory]):
    fields = fields_index(
        named=False,
        updateTime=Field("update_time", datetime),
        code=Field("code", str),
    )

    def columns(self, resource: CreditCategory) -> dict[str, Any]:
        return {"code": resource.code, "description": resource.description}


MAPPINGS: dict[str, Mapping[Any]] = {
    "customer": CustomerMapping(),
    "customer_account": CustomerAccountMapping(),
    "payment_mean": PaymentMeanMapping(),
    "credit_category": CreditCategoryMapping(),
}
"""By kind."""
