"""Bank account and card checks. Full card numbers never leave this module unmasked."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime

from google.protobuf import unknown_fields
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from stdnum import luhn
from stdnum.exceptions import ValidationError

from customer_management.domain.errors import FieldViolation, InvalidArgument
from customer_management.domain.validation import Violations, representable, timestamp
from tmf629.v1.payment_mean_pb2 import BankAccount, CreditCard

CARD_MIN_DIGITS = 12
CARD_MAX_DIGITS = 19
CARD_SEPARATORS = str.maketrans("", "", " -")
VERIFICATION_CODE = re.compile(r"^(cvv2?|cvc2?|cid|csc|cav2|security[\s_-]?code)$", re.IGNORECASE)
"""Names under which callers send a card verification code, which must never be stored."""


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


def card_fingerprint(digits: str, key: bytes) -> str:
    """HMAC-SHA256 of the number: recognises a card again without keeping it. Without a
    key there is none: a bare hash of a card number is quickly brute-forced."""
    if not key:
        return ""
    return hmac.new(key, digits.encode(), hashlib.sha256).hexdigest()


def refuse_unknown_card_fields(card: CreditCard, path: str) -> None:
    """A card field this version does not know may well be a verification code, which
    must never be stored: refused, where elsewhere unknown fields are only dropped."""
    if len(unknown_fields.UnknownFieldSet(card)):
        problem = "carries fields this service does not know; a verification code is never accepted"
        raise InvalidArgument(f"{path} {problem}", violations=[FieldViolation(path, problem)])


def check_credit_card(
    card: CreditCard, path: str, v: Violations, *, previous: CreditCard | None, key: bytes
) -> None:
    """Replaces a full card number by its masked form and fingerprint, or reports what is
    wrong.

    The stored card sent back as it was read (masked number and all) is accepted as it
    is, so a card that has expired since does not block other changes.
    """
    if previous is not None and card == previous:
        return
    unchanged = previous is not None and card.number == previous.number
    if unchanged and previous is not None:
        card.fingerprint = previous.fingerprint  # output-only: never the caller's
    if v.require(f"{path}.number", card.number) and not unchanged:
        digits = card.number.translate(CARD_SEPARATORS)
        card.number = card.fingerprint = ""  # whatever happens next, the number is not kept
        problem = _card_number_problem(digits)
        if problem:
            v.add(f"{path}.number", problem)
        else:
            card.number = mask_card_number(digits)
            card.fingerprint = card_fingerprint(digits, key)
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
