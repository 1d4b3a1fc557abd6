"""Rules of the PaymentMean resource."""

from __future__ import annotations

from customer_management.domain.kinds import (
    CODE_MAX,
    Kind,
    RefSlot,
    check_name,
    check_related_party,
)
from customer_management.domain.payment_details import (
    check_bank_account,
    check_credit_card,
    refuse_unknown_card_fields,
)
from customer_management.domain.validation import Violations, check_period
from customer_management.store.mapping import MAPPINGS
from tmf629.v1.payment_mean_pb2 import PaymentMean

# Types that call for a bankAccount (BankAccountDebit, BankAccountTransfer …) and those
# that call for a creditCard; other types carry whichever detail the caller gives.
BANK_ACCOUNT_PREFIX = "bankaccount"
CARD_TYPES = frozenset({"creditcard", "debitcard", "bankcard"})


class PaymentMeanKind(Kind[PaymentMean]):
    kind = "payment_mean"
    field = "payment_mean"
    message_type = PaymentMean
    stored = MAPPINGS["payment_mean"]
    fields = stored.fields

    def __init__(self, card_key: bytes = b"") -> None:
        self.card_key = card_key
        """Keys card fingerprints (see payment_details.card_fingerprint)."""

    def screen(self, resource: PaymentMean) -> None:
        if resource.HasField("credit_card"):
            refuse_unknown_card_fields(resource.credit_card, f"{self.field}.credit_card")

    def check(self, resource: PaymentMean, previous: PaymentMean | None, v: Violations) -> None:
        path = self.field
        check_name(resource, path, v)
        if v.require(f"{path}.type", resource.type):
            v.max_length(f"{path}.type", resource.type, CODE_MAX)
        check_period(resource.valid_for, f"{path}.valid_for", v)
        check_related_party(resource.related_party, f"{path}.related_party", v)
        kind = resource.type.lower()
        wants_bank = kind.startswith(BANK_ACCOUNT_PREFIX)
        wants_card = kind in CARD_TYPES
        if wants_bank:
            v.require(f"{path}.bank_account", resource.HasField("bank_account"))
        if wants_card:
            v.require(f"{path}.credit_card", resource.HasField("credit_card"))
        if resource.HasField("bank_account"):
            if wants_card:
                v.add(f"{path}.bank_account", f"does not go with type {resource.type}")
            check_bank_account(resource.bank_account, f"{path}.bank_account", v)
        if resource.HasField("credit_card"):
            if wants_bank:
                v.add(f"{path}.credit_card", f"does not go with type {resource.type}")
            before = previous.credit_card if previous and previous.HasField("credit_card") else None
            check_credit_card(
                resource.credit_card,
                f"{path}.credit_card",
                v,
                previous=before,
                key=self.card_key,
            )

    def references(self, resource: PaymentMean) -> list[RefSlot]:
        return []
