"""Account PINs: write-only, kept only as a salted, memory-hard hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading

PIN_MIN_DIGITS = 4
PIN_MAX_DIGITS = 12
# OWASP's scrypt parameters: N=2^17, r=8, p=1 (128 MiB, ~0.1 s).
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
# Each hash takes 128 MiB: at most this many at once, however many calls come in.
_SLOTS = threading.BoundedSemaphore(2)


def pin_problem(pin: str) -> str | None:
    if not (pin.isascii() and pin.isdigit()):
        return "must contain digits only"
    if not PIN_MIN_DIGITS <= len(pin) <= PIN_MAX_DIGITS:
        return f"must have {PIN_MIN_DIGITS} to {PIN_MAX_DIGITS} digits"
    return None


def hash_pin(pin: str, pepper: bytes) -> str:
    """`scrypt$N$r$p$salt$hash`; slow on purpose, so call it off the event loop."""
    salt = os.urandom(16)
    digest = _scrypt(pin, salt, pepper, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def _scrypt(pin: str, salt: bytes, pepper: bytes, n: int, r: int, p: int) -> bytes:
    keyed = hmac.new(pepper, pin.encode(), hashlib.sha256).digest()
    with _SLOTS:
        return hashlib.scrypt(keyed, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pin_matches(pin: str, stored: str, pepper: bytes) -> bool:
    """Whether `pin` hashes to `stored`, compared in constant time; slow like `hash_pin`."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(pin, base64.b64decode(salt), pepper, int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
