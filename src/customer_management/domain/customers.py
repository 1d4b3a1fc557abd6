"""Rules of the Customer resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from customer_management.domain.kinds import (
    NAME_MAX,
    Column,
    Kind,
    RefSlot,
    check_contact_medium,
    check_related_party,
    check_status,
    columns_index,
)
from customer_management.domain.validation import Violations, check_period, period_bounds
from customer_management.store.models import Base, CustomerAccountLink, CustomerPaymentMeanLink
from tmf629.v1.customer_pb2 import Customer


class CustomerKind(Kind[Customer]):
    kind = "customer"
    field = "customer"
    message_type = Customer
    columns_by_filter_name = columns_index(
        Column("id", str),
        Column("name", str),
        Column("status", str),
        Column("description", str),
        Column("customer_rank", int, sortable=False),
        Column("create_time", datetime),
        Column("update_time", datetime),
    )

    def check(self, resource: Customer, previous: Customer | None, v: Violations) -> None:
        path = self.field
        if v.require(f"{path}.name", resource.name):
            v.max_length(f"{path}.name", resource.name, NAME_MAX)
        check_status(resource, path, v)
        check_period(resource.valid_for, f"{path}.valid_for", v)
        check_related_party(resource.related_party, f"{path}.related_party", v)
        for i, characteristic in enumerate(resource.characteristic):
            v.require(f"{path}.characteristic[{i}].name", characteristic.name)
            v.require(f"{path}.characteristic[{i}].value", characteristic.value)
        check_contact_medium(resource.contact_medium, f"{path}.contact_medium", v)
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
        }
