"""How searchable contact values are stored, so equal values match however written.

Stored rows and filter literals go through the same function, which is what makes an
email match case-insensitively and a phone number match in any common written form.
"""

from __future__ import annotations

import re

import phonenumbers

_NOT_DIGITS = re.compile(r"\D")
_PLAIN_INTERNATIONAL = re.compile(r"\+[1-9][\d \-.]{5,30}")
"""`+44 20 7946 0958`: already E.164 once the separators go; parsing it (slow) adds nothing."""


def email_key(address: str) -> str | None:
    """Email addresses compare case-insensitively (what every mail system does in practice)."""
    address = address.strip()
    return address.lower() if address else None


def phone_key(number: str) -> str | None:
    """E.164 when the number carries its country code (`+44 (0)20 7946-0958`, `0044 …`);
    otherwise its digits, so national forms match each other whatever the punctuation."""
    number = number.strip()
    if not number:
        return None
    international = "+" + number[2:] if number.startswith("00") else number
    if _PLAIN_INTERNATIONAL.fullmatch(international):
        return "+" + _NOT_DIGITS.sub("", international)
    if international.startswith("+"):
        try:
            parsed = phonenumbers.parse(international, None)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None and phonenumbers.is_possible_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    digits = _NOT_DIGITS.sub("", number)
    return digits or None
