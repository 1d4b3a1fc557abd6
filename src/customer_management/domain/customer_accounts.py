"""Rules of the CustomerAccount resource."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from customer_management.domain.kinds import (
    CODE_MAX,
    Kind,
    RefSlot,
    check_contact_medium,
    check_name,
    check_related_party,
    check_status,
)
from customer_management.domain.validation import (
    KEY_MAX,
    Violations,
    check_period,
    key_problem,
    money,
)
from customer_management.store.mapping import MAPPINGS
from tmf629.v1.customer_account_pb2 import CustomerAccount


def _amount(message: Any, name: str, path: str, v: Violations, *, negative: bool) -> Decimal | None:
    if not message.HasField(name):
        return None
    return money(getattr(message, name), f"{path}.{name}", v, negative=negative)


class CustomerAccountKind(Kind[CustomerAccount]):
    kind = "customer_account"
    field = "customer_account"
    message_type = CustomerAccount
    stored = MAPPINGS["customer_account"]
    fields = stored.fields
    update_time_field = "last_modified"
    unique = ("external_reference",)

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
        if resource.HasField("credit_category"):
            here = f"{path}.credit_category"
            slots.append(RefSlot(here, "credit_category", resource.credit_category, key="code"))
        for i, plan in enumerate(resource.payment_plan):
            if plan.HasField("payment_mean"):
                here = f"{path}.payment_plan[{i}].payment_mean"
                slots.append(RefSlot(here, "payment_mean", plan.payment_mean))
        return slots
