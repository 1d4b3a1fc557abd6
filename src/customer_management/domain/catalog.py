"""Every kind of resource the service keeps, in one place: the server and the bulk
import serve the same ones."""

from __future__ import annotations

from typing import Any

from customer_management.domain.credit_categories import CreditCategoryKind
from customer_management.domain.customer_accounts import CustomerAccountKind
from customer_management.domain.customers import CustomerKind
from customer_management.domain.kinds import Kind
from customer_management.domain.payment_means import PaymentMeanKind


def every_kind(phone_region: str = "", card_key: bytes = b"") -> list[Kind[Any]]:
    """TMF629's three, then this service's extension (credit categories)."""
    return [
        CustomerKind(phone_region),
        CustomerAccountKind(phone_region),
        PaymentMeanKind(card_key),
        CreditCategoryKind(),
    ]
