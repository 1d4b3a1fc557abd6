"""How searchable contact values are stored, so equal values match however written.

Stored rows and filter literals go through the same function, which is what makes an
email match case-insensitively and a phone number match in any common written form.
"""

from __future__ import annotations

import re

import phonenumbers

_NOT_DIGITS = re.compile(r"\D")
_E164 = re.compile(r"\+[1-9]\d{6,14}")
"""A number already in E.164, as stored ones are: parsing it again (slow) adds nothing."""


def email_key(address: str, region: str = "") -> str | None:
    """Email addresses compare case-insensitively (what every mail system does in practice)."""
    address = address.strip()
    return address.lower() if address else None


def phone_key(number: str, region: str = "") -> str | None:
    """E.164 when the number carries its country code (`+44 (0)20 7946-0958`, `0044 …`)
    or a default `region` says which country a national number is in; otherwise its
    digits, so national forms still match each other whatever the punctuation."""
    number = number.strip()
    if not number:
        return None
    if _E164.fullmatch(number):
        return number
    return e164(number, region) or _NOT_DIGITS.sub("", number) or None


def e164(number: str, region: str = "") -> str | None:
    """The number in E.164 (`+442079460958`), or None if it is not a possible telephone
    number in international form or, given a `region`, in that country's national form."""
    number = number.strip()
    international = "+" + number[2:] if number.startswith("00") else number
    try:
        parsed = phonenumbers.parse(international, region.upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
