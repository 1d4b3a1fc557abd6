"""Rules of the CustomerAccount resource."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from customer_management.domain.kinds import (
    CODE_MAX,
    Field,
    Kind,
    RefSlot,
    check_contact_medium,
    check_name,
    check_related_party,
    check_status,
    fields_index,
)
from customer_management.domain.validation import (
    KEY_MAX,
    Violations,
    check_period,
    key_problem,
    money,
)
from customer_management.store.models import (
    AccountBalanceRow,
    AccountRelationshipLink,
    Base,
    PaymentPlanRow,
)
from tmf629.v1.customer_account_pb2 import CustomerAccount


def _amount(message: Any, name: str, path: str, v: Violations, *, negative: bool) -> Decimal | None:
    if not message.HasField(name):
        return None
    return money(getattr(message, name), f"{path}.{name}", v, negative=negative)


class CustomerAccountKind(Kind[CustomerAccount]):
    kind = "customer_account"
    field = "customer_account"
    message_type = CustomerAccount
    child_fields = frozenset(
        {"payment_plan", "customer_account_balance", "customer_account_relationship"}
    )
    update_time_field = "last_modified"
    unique = ("external_reference",)
    fields = fields_index(
        lastModified=Field("update_time", datetime),
        status=Field("status", str),
        description=Field("description", str, text=True),
        accountType=Field("account_type", str),
        creditLimit=Field("credit_limit", Decimal, nullable=True),
        receivableBalance=Field("receivable_balance", Decimal, nullable=True),
        externalReference=Field("external_reference", str, nullable=True),
        customer__id=Field("customer_id", str, nullable=True),
        customerAccountRelationship__relationshipType=Field(
            "relationship_type", str, AccountRelationshipLink
        ),
        customerAccountRelationship__customerAccount__id=Field(
            "related_account_id", str, AccountRelationshipLink
        ),
        paymentPlan__status=Field("status", str, PaymentPlanRow),
        paymentPlan__paymentMean__id=Field("payment_mean_id", str, PaymentPlanRow),
    )

    def __init__(self, phone_region: str = "") -> None:
        self.phone_region = phone_region

    def check(
        self, resource: CustomerAccount, previous: CustomerAccount | None, v: Violations
    ) -> None:
        path = self.field
        check_name(resource, path, v)
        if resource.external_reference and (
            problem := key_problem(resource.external_reference, KEY_MAX)
        ):
            v.add(f"{path}.external_reference", problem)
        if v.require(f"{path}.account_type", resource.account_type):
            v.max_length(f"{path}.account_type", resource.account_type, CODE_MAX)
        check_status(resource, path, v)
        _amount(resource, "credit_limit", path, v, negative=False)
        _amount(resource, "receivable_balance", path, v, negative=True)
        for i, exemption in enumerate(resource.customer_account_tax_exemption):
            check_period(
                exemption.valid_for, f"{path}.customer_account_tax_exemption[{i}].valid_for", v
            )
        for i, relationship in enumerate(resource.customer_account_relationship):
            here = f"{path}.customer_account_relationship[{i}]"
            v.max_length(f"{here}.relationship_type", relationship.relationship_type, CODE_MAX)
            check_period(relationship.valid_for, f"{here}.valid_for", v)
        for i, contact in enumerate(resource.contact):
            here = f"{path}.contact[{i}]"
            check_period(contact.valid_for, f"{here}.valid_for", v)
            check_contact_medium(
                contact.contact_medium, f"{here}.contact_medium", v, self.phone_region
            )
            check_related_party(contact.related_party, f"{here}.related_party", v)
        for i, balance in enumerate(resource.customer_account_balance):
            here = f"{path}.customer_account_balance[{i}]"
            _amount(balance, "amount", here, v, negative=True)
            v.max_length(f"{here}.type", balance.type, CODE_MAX)
            v.max_length(f"{here}.status", balance.status, CODE_MAX)
            check_period(balance.valid_for, f"{here}.valid_for", v)
        for i, plan in enumerate(resource.payment_plan):
            here = f"{path}.payment_plan[{i}]"
            v.require(f"{here}.type", plan.type)
            if v.require(f"{here}.status", plan.status):
                v.max_length(f"{here}.status", plan.status, CODE_MAX)
            if v.require(f"{here}.priority", plan.HasField("priority")):
                v.non_negative(f"{here}.priority", plan.priority)
            v.non_negative(f"{here}.number_of_payments", plan.number_of_payments)
            _amount(plan, "amount", here, v, negative=False)
            v.require(f"{here}.payment_mean", plan.HasField("payment_mean"))
            check_period(plan.valid_for, f"{here}.valid_for", v)

    def references(self, resource: CustomerAccount) -> list[RefSlot]:
        path = self.field
        slots = []
        if resource.HasField("customer"):
            slots.append(RefSlot(f"{path}.customer", "customer", resource.customer))
        for i, relationship in enumerate(resource.customer_account_relationship):
            for j, ref in enumerate(relationship.customer_account):
                here = f"{path}.customer_account_relationship[{i}].customer_account[{j}]"
                slots.append(RefSlot(here, "customer_account", ref))
        for i, plan in enumerate(resource.payment_plan):
            if plan.HasField("payment_mean"):
                here = f"{path}.payment_plan[{i}].payment_mean"
                slots.append(RefSlot(here, "payment_mean", plan.payment_mean))
        return slots

    def columns(self, resource: CustomerAccount) -> dict[str, Any]:
        unchecked = Violations()
        return {
            "name": resource.name,
            "account_type": resource.account_type,
            "status": resource.status,
            "description": resource.description,
            "credit_limit": _amount(resource, "credit_limit", "", unchecked, negative=True),
            "receivable_balance": _amount(
                resource, "receivable_balance", "", unchecked, negative=True
            ),
            "customer_id": resource.customer.id if resource.HasField("customer") else None,
            "external_reference": resource.external_reference or None,
        }

    def children(self, resource: CustomerAccount) -> dict[type[Base], list[dict[str, Any]]]:
        unchecked = Violations()
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
                    "amount": _amount(plan, "amount", "", unchecked, negative=True),
                }
                for i, plan in enumerate(resource.payment_plan)
            ],
            AccountBalanceRow: [
                {
                    "position": i,
                    "type": balance.type,
                    "status": balance.status,
                    "amount": _amount(balance, "amount", "", unchecked, negative=True),
                }
                for i, balance in enumerate(resource.customer_account_balance)
            ],
        }
