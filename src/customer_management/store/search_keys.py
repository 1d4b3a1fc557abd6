"""How searchable contact values are stored, so equal values match however written.

Stored rows and filter literals go through the same function, which is what makes an
email match case-insensitively and a phone number match in any common written form.
"""

from __future__ import annotations

import functools
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
    if _E164.fullmatch(number):
        return _possible_e164(number)
    international = "+" + number[2:] if number.startswith("00") else number
    try:
        parsed = phonenumbers.parse(international, region.upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _possible_e164(number: str) -> str | None:
    """A number already written in E.164 (most are: systems store them so), checked
    without phonenumbers' parser, which costs a Create more than all its other checks.
    Country codes are prefix-free, so the one known code the digits start with is
    theirs, and phonenumbers says whether the rest is a possible length. Where the
    parser would rewrite the national part (a leading zero kept, or a national prefix
    it strips, as for +1 1… or +7 8…), the parser decides."""
    digits = number[1:]
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            if national[:1] != "0" and not _national_prefix(code, national):
                parsed = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
                return number if phonenumbers.is_possible_number(parsed) else None
            break
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@functools.cache
def _prefix_pattern(code: int) -> re.Pattern[str] | None:
    region = phonenumbers.region_code_for_country_code(code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else None


def _national_prefix(code: int, national: str) -> bool:
    """Whether the parser could take the start of `national` for a national prefix."""
    pattern = _prefix_pattern(code)
    return pattern is not None and pattern.match(national) is not None
