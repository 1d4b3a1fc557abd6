"""The fast path of domain/emails.py accepts only what email-validator accepts, and
returns what email-validator returns."""

from __future__ import annotations

import random

import pytest
from email_validator import EmailNotValidError, validate_email

from customer_management.domain import emails

ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
ODD = [".", "..", '"', " ", "é", "@", "\\", "A", "_", "--", "xn--", "é", "", "0"]
LABEL = "abcxyz0189-"
ENDINGS = [
    "com",
    "org",
    "io",
    "example",
    "test",
    "local",
    "localhost",
    "onion",
    "arpa",
    "invalid",
    "c0m",
    "123",
    "a",
    "x-y",
    "com-",
    "COM",
    "de",
    "xn--p1ai",
]


def mutated(rng: random.Random, text: str) -> str:
    """`text`, now and then with something odd put in (a quarter of the time)."""
    if not text or rng.random() > 0.25:
        return text
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(ODD) + text[at + rng.randint(0, 1) :]


def library(address: str) -> str | None:
    try:
        return str(validate_email(address, check_deliverability=False).normalized)
    except EmailNotValidError:
        return None


def generated(rng: random.Random) -> str:
    """Mostly plausible addresses near the fast path's edges: lengths at the limits,
    dots, hyphens, special-use and odd top-level names, mailbox names the library
    rewrites, and a character out of place now and then."""
    words = [
        "".join(rng.choice(ATEXT) for _ in range(rng.choice([1, 3, 8, 20, 30])))
        for _ in range(rng.randint(1, 3))
    ]
    local = ".".join(words)[: rng.choice([64, 64, 65, 200])]
    if rng.random() < 0.05:
        local = rng.choice(["postmaster", "Info", "SALES", "www", "john.doe"])
    labels = [
        "".join(rng.choice(LABEL) for _ in range(rng.choice([1, 3, 8, 62, 63, 64])))
        for _ in range(rng.randint(0, 4))
    ]
    domain = ".".join([*labels, rng.choice(ENDINGS)])
    return mutated(rng, local) + "@" + mutated(rng, domain)


def test_the_fast_path_agrees_with_the_library() -> None:
    rng = random.Random(629)
    fast = 0
    for _ in range(30_000):
        address = generated(rng)
        expected = library(address)
        if emails._PLAIN.fullmatch(address) and emails._plain(emails._PLAIN.fullmatch(address)):
            fast += 1
            assert expected == address, address
        if expected is None:
            with pytest.raises(EmailNotValidError):
                emails.normalized(address)
        else:
            assert emails.normalized(address) == expected, address
    assert fast > 2_000  # the fast path was taken often enough to mean something


@pytest.mark.parametrize(
    "address",
    ["john.doe@example.com", "a@b.co", "x_y+z@sub-domain.example.org", "Postmaster@example.com"],
)
def test_common_addresses(address: str) -> None:
    assert emails.normalized(address) == library(address)
