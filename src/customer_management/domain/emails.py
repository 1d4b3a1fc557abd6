"""Email addresses: the syntax check of email-validator, with a fast path for the plain
ASCII addresses nearly every caller sends.

email-validator spends about 50 µs an address (mostly on the Unicode rules of its domain
part), a tenth of a Create. An address that is a dot-atom of ASCII atext, at a
lower-case ASCII domain whose top-level label ends in a letter, with no punycode, no
special-use name and nothing the library would rewrite, is one the library accepts and
returns unchanged (tests/test_emails.py compares the two on generated addresses);
anything else goes to the library.
"""

from __future__ import annotations

import re

import email_validator
from email_validator import validate_email

_PLAIN = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z])?)"
)
LOCAL_MAX = 64
ADDRESS_MAX = 254
_REWRITTEN_LOCAL = frozenset(email_validator.rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES)
"""Mailbox names (RFC 2142) the library lower-cases."""


def normalized(address: str) -> str:
    """The address as email-validator normalises it (syntax only, no DNS); raises
    email_validator.EmailNotValidError when it is not a valid address."""
    match = _PLAIN.fullmatch(address)
    if match is not None and _plain(match):
        return address
    return str(validate_email(address, check_deliverability=False).normalized)


def _plain(match: re.Match[str]) -> bool:
    local, domain = match["local"], match["domain"]
    if len(local) > LOCAL_MAX or len(match.string) > ADDRESS_MAX or "--" in domain:
        return False
    if local.lower() in _REWRITTEN_LOCAL:
        return False
    return not any(
        domain == name or domain.endswith("." + name)
        for name in email_validator.SPECIAL_USE_DOMAIN_NAMES
    )
