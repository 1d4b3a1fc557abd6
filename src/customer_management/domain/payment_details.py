"""Bank account and card checks. Full card numbers never leave this module unmasked."""

from __future__ import annotations

from datetime import UTC, datetime

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from stdnum import luhn
from stdnum.exceptions import ValidationError

from customer_management.domain.validation import Violations, representable, timestamp
from tmf629.v1.payment_mean_pb2 import BankAccount, CreditCard

CARD_MIN_DIGITS = 12
CARD_MAX_DIGITS = 19
CARD_SEPARATORS = str.maketrans("", "", " -")


def check_bank_account(account: BankAccount, path: str, v: Violations) -> None:
    """Normalises IBAN and BIC to their compact upper-case form, or reports them."""
    if v.require(f"{path}.iban", account.iban):
        try:
            account.iban = IBAN(account.iban).compact
        except SchwiftyException as error:
            v.add(f"{path}.iban", f"is not a valid IBAN: {error}")
    if account.bic:
        try:
            account.bic = str(BIC(account.bic))
        except SchwiftyException as error:
            v.add(f"{path}.bic", f"is not a valid BIC: {error}")


def mask_card_number(number: str) -> str:
    return "*" * (len(number) - 4) + number[-4:]


def check_credit_card(
    card: CreditCard, path: str, v: Violations, *, previous: CreditCard | None
) -> None:
    """Replaces a full card number by its masked form, or reports what is wrong.

    The stored card sent back as it was read (masked number and all) is accepted as it
    is, so a card that has expired since does not block other changes.
    """
    if previous is not None and card == previous:
        return
    unchanged = previous is not None and card.number == previous.number
    if v.require(f"{path}.number", card.number) and not unchanged:
        digits = card.number.translate(CARD_SEPARATORS)
        card.number = ""  # whatever happens next, the full number is not kept
        problem = _card_number_problem(digits)
        if problem:
            v.add(f"{path}.number", problem)
        else:
            card.number = mask_card_number(digits)
    here = f"{path}.expiration_date"
    if (
        v.require(here, card.HasField("expiration_date"))
        and representable(card.expiration_date)
        and timestamp(card.expiration_date) < datetime.now(UTC)
    ):
        v.add(here, "is in the past: the card has expired")


def _card_number_problem(digits: str) -> str | None:
    if not digits.isascii() or not digits.isdigit():
        return "must be the full card number (digits only)"
    if not CARD_MIN_DIGITS <= len(digits) <= CARD_MAX_DIGITS:
        return f"must have {CARD_MIN_DIGITS} to {CARD_MAX_DIGITS} digits"
    try:
        luhn.validate(digits)
    except ValidationError:
        return "fails the Luhn check"
    return None
