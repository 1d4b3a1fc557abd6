"""VerifyCustomerAccountPin: a PIN check that guessing cannot outrun.

Each attempt is counted before its PIN is hashed, so however many run at once, at most
`MAX_ATTEMPTS` are checked before the lock: the attempt that reaches it locks the PIN
for the configured period, and a match clears the count (and a lock it set itself).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from customer_management.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from customer_management.domain.ids import require_id
from customer_management.domain.pins import hash_pin, pin_matches, pin_problem
from customer_management.domain.service import ResourceService
from customer_management.store import resources
from tmf629.v1.customer_account_pb2 import CustomerAccount

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Verdict:
    match: bool
    attempts_left: int
    locked_until: datetime | None = None


class PinChecks:
    def __init__(self, accounts: ResourceService[CustomerAccount], lock_period: timedelta):
        self.accounts = accounts
        self.lock_period = lock_period

    async def verify(self, id: str, pin: str) -> Verdict:
        require_id(id)
        if problem := ("is required" if not pin else pin_problem(pin)):
            raise InvalidArgument(f"pin {problem}", violations=[FieldViolation("pin", problem)])
        stored, attempt, locked_until = await self.accounts.database.write(
            lambda session, _: self._count_attempt(session, id)
        )
        settings = self.accounts.settings
        peppers = (settings.pin_pepper, *settings.previous_peppers)
        matched, stale = await asyncio.to_thread(pin_matches, pin, stored, peppers)
        if not matched:
            return Verdict(False, max(0, MAX_ATTEMPTS - attempt), locked_until)
        # A PIN hashed with a pepper being rotated out is hashed again with the current one.
        fresh = await asyncio.to_thread(hash_pin, pin, settings.pin_pepper) if stale else None
        await self.accounts.database.write(
            lambda session, _: self._clear(session, id, stored, fresh)
        )
        return Verdict(True, MAX_ATTEMPTS)

    def _count_attempt(self, session: Session, id: str) -> tuple[str, int, datetime | None]:
        row = self._row(session, id)
        now = datetime.now(UTC)
        if row.pin_hash is None:
            raise FailedPrecondition(
                f"customer_account {id} has no PIN", reason="PIN_NOT_SET", metadata={"id": id}
            )
        if row.pin_locked_until is not None:
            if row.pin_locked_until > now:
                unlock = row.pin_locked_until.isoformat().replace("+00:00", "Z")
                raise FailedPrecondition(
                    f"the PIN of customer_account {id} is locked until {unlock}",
                    reason="PIN_LOCKED",
                    metadata={"id": id, "unlock_time": unlock},
                )
            row.pin_locked_until, row.pin_failures = None, 0  # the lock has run out
        row.pin_failures += 1
        if row.pin_failures >= MAX_ATTEMPTS:
            row.pin_locked_until = now + self.lock_period
        return row.pin_hash, row.pin_failures, row.pin_locked_until

    def _clear(self, session: Session, id: str, stored: str, fresh: str | None) -> None:
        row = self._row(session, id)
        if row.pin_hash == stored:  # not if the PIN changed meanwhile
            row.pin_failures, row.pin_locked_until = 0, None
            if fresh is not None:
                row.pin_hash = fresh

    def _row(self, session: Session, id: str) -> resources.PinState:
        row = resources.lock_pin_state(session, id)
        if row is None:
            raise self.accounts.not_found(id)
        return row
