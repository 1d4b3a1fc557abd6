"""Rules of the Customer resource."""

from __future__ import annotations

from customer_management.domain.kinds import (
    CODE_MAX,
    VALUE_MAX,
    Kind,
    RefSlot,
    check_contact_medium,
    check_name,
    check_related_party,
    check_status,
)
from customer_management.domain.payment_details import VERIFICATION_CODE
from customer_management.domain.validation import Violations, check_period
from customer_management.store.mapping import MAPPINGS
from tmf629.v1.customer_pb2 import Customer


class CustomerKind(Kind[Customer]):
    kind = "customer"
    field = "customer"
    message_type = Customer
    stored = MAPPINGS["customer"]
    fields = stored.fields

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
