"""The E.164 fast path of store.search_keys gives exactly what phonenumbers' parser gives."""

from __future__ import annotations

import random

import phonenumbers

from customer_management.store.search_keys import e164


def parsed(number: str) -> str | None:
    """What the parser alone makes of an international number (the slow path)."""
    try:
        found = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(found):
        return None
    return phonenumbers.format_number(found, phonenumbers.PhoneNumberFormat.E164)


def test_e164_numbers_come_out_as_the_parser_says() -> None:
    rng = random.Random(629)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    checked = 0
    for i in range(20_000):
        code = rng.choice(codes) if i % 2 else rng.randint(1, 999)
        rest = "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 14)))
        number = f"+{code}{rest}"
        if len(number) > 16 or (rest[0] == "0" and i % 3):
            continue
        assert e164(number) == parsed(number), number
        checked += 1
    assert checked > 10_000
    # The cases where the parser rewrites what it is given take the parser.
    for number in ("+116589268157", "+787605517265", "+67280865", "+390612345678"):
        assert e164(number) == parsed(number), number
