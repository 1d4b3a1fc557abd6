"""Rules of the Customer resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from customer_management.domain.kinds import (
    CODE_MAX,
    VALUE_MAX,
    Field,
    Kind,
    RefSlot,
    check_contact_medium,
    check_name,
    check_related_party,
    check_status,
    fields_index,
    related_party_columns,
)
from customer_management.domain.payment_details import VERIFICATION_CODE
from customer_management.domain.validation import Violations, check_period, period_bounds
from customer_management.store.models import (
    Base,
    CharacteristicRow,
    ContactMediumRow,
    CustomerAccountLink,
    CustomerPaymentMeanLink,
)
from customer_management.store.search_keys import email_key, phone_key
from tmf629.v1.customer_pb2 import Customer


class CustomerKind(Kind[Customer]):
    kind = "customer"
    field = "customer"
    message_type = Customer
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

    def __init__(self, phone_region: str = "") -> None:
        self.phone_region = phone_region

    def check(self, resource: Customer, previous: Customer | None, v: Violations) -> None:
        path = self.field
        check_name(resource, path, v)
        check_status(resource, path, v)
        check_period(resource.valid_for, f"{path}.valid_for", v)
        check_related_party(resource.related_party, f"{path}.related_party", v)
        for i, characteristic in enumerate(resource.characteristic):
            here = f"{path}.characteristic[{i}]"
            if v.require(f"{here}.name", characteristic.name):
                v.max_length(f"{here}.name", characteristic.name, CODE_MAX)
                if VERIFICATION_CODE.match(characteristic.name.strip()):
                    v.add(f"{here}.name", "must not carry a card verification code")
            if v.require(f"{here}.value", characteristic.value):
                v.max_length(f"{here}.value", characteristic.value, VALUE_MAX)
        check_contact_medium(
            resource.contact_medium,
            f"{path}.contact_medium",
            v,
            self.phone_region,
            previous.contact_medium if previous is not None else (),
        )
        for i, profile in enumerate(resource.customer_credit_profile):
            here = f"{path}.customer_credit_profile[{i}]"
            v.non_negative(f"{here}.credit_risk_rating", profile.credit_risk_rating)
            v.non_negative(f"{here}.credit_score", profile.credit_score)
            check_period(profile.valid_for, f"{here}.valid_for", v)

    def references(self, resource: Customer) -> list[RefSlot]:
        path = self.field
        return [
            *(
                RefSlot(f"{path}.customer_account[{i}]", "customer_account", ref)
                for i, ref in enumerate(resource.customer_account)
            ),
            *(
                RefSlot(f"{path}.payment_mean[{i}]", "payment_mean", ref)
                for i, ref in enumerate(resource.payment_mean)
            ),
        ]

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
            **related_party_columns(resource),
        }

    def children(self, resource: Customer) -> dict[type[Base], list[dict[str, Any]]]:
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
                    "number": phone_key(medium.medium.number, self.phone_region),
                }
                for i, medium in enumerate(resource.contact_medium)
            ],
            CharacteristicRow: [
                {"position": i, "name": characteristic.name, "value": characteristic.value}
                for i, characteristic in enumerate(resource.characteristic)
            ],
        }
