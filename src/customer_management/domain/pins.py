"""Account PINs: write-only, kept only as a salted, memory-hard hash."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import threading
from collections.abc import Sequence

from google.protobuf.message import Message

from customer_management.domain.validation import Violations

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
    """`scrypt$N$r$p$salt$hash$pepper-id`; slow on purpose, so call it off the event loop."""
    salt = os.urandom(16)
    digest = _scrypt(pin, salt, pepper, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    fields = [str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    return "$".join(["scrypt", *fields, pepper_id(pepper)])


def pepper_id(pepper: bytes) -> str:
    """Names a pepper in its hashes (so rotation knows which one to use) without
    revealing it: a short digest of it."""
    return hashlib.sha256(b"tmf629 pepper id:" + pepper).hexdigest()[:12]


def _scrypt(pin: str, salt: bytes, pepper: bytes, n: int, r: int, p: int) -> bytes:
    keyed = hmac.new(pepper, pin.encode(), hashlib.sha256).digest()
    with _SLOTS:
        return hashlib.scrypt(keyed, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pin_matches(pin: str, stored: str, peppers: Sequence[bytes]) -> tuple[bool, bool]:
    """Whether `pin` hashes to `stored`, compared in constant time, and whether the hash
    should be made again with the current pepper (`peppers[0]`; the others are previous
    ones, kept while hashes made with them remain). Slow like `hash_pin`."""
    try:
        scheme, n, r, p, salt, digest, *named = stored.split("$")
        if scheme != "scrypt" or len(named) > 1:
            return False, False
        by_id = {pepper_id(pepper): pepper for pepper in peppers}
        # Hashes from before pepper ids name none: they were made with one of the peppers.
        candidates = [by_id[named[0]]] if named and named[0] in by_id else []
        candidates = candidates if named else list(peppers)
        expected = base64.b64decode(digest)
        for pepper in candidates:
            actual = _scrypt(pin, base64.b64decode(salt), pepper, int(n), int(r), int(p))
            if hmac.compare_digest(actual, expected):
                return True, not named or pepper != peppers[0]
    except ValueError:
        pass
    return False, False


def take_pin(resource: Message, path: str, v: Violations) -> str:
    """Removes the write-only PIN from the resource (it is stored apart, hashed) and
    returns it; a bad one is added to `v` under `path`.pin."""
    if "pin" not in resource.DESCRIPTOR.fields_by_name:
        return ""
    pin: str = getattr(resource, "pin")  # noqa: B009 (only accounts have one)
    resource.ClearField("pin")
    if pin and (problem := pin_problem(pin)):
        v.add(f"{path}.pin", problem)
    if pin:
        setattr(resource, "pin_set", True)  # noqa: B010 (only accounts have one)
    return pin


async def hash_off_loop(pin: str, pepper: bytes) -> str | None:
    """The hash of `pin` (None for no PIN); scrypt is slow on purpose, so it runs off the
    event loop."""
    if not pin:
        return None
    return await asyncio.to_thread(hash_pin, pin, pepper)
