"""The contract of a unit of work: what `Database.write` runs, and how it may run.

A unit is a function of a Session and a Run that reads and writes in the session and
never commits. The write runner group-commits concurrent units: it runs them together
in one transaction (Run.TOGETHER), and when that fails it runs each again alone, in a
savepoint of its own (Run.ALONE). So every unit may run twice, and its second run must
give what a first run alone would: it may not keep state from the first (a counter
bumped, a list appended to) outside the session, whose changes were rolled back. A unit
may leave to a constraint a check it makes when alone (a request id or a unique key
taken): `run` says which run it is in. tests/test_units.py runs every unit kind twice.

A unit that names the row it updates (`Unit.lock`) has it locked and read together with
the other units' rows, in one statement before any of them runs (resources.lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

ALONE = "units.alone"
T_co = TypeVar("T_co", covariant=True)


class Run(Enum):
    TOGETHER = "together"
    """The first run: in one transaction with the other units of its batch."""
    ALONE = "alone"
    """The second run, after the batch failed together: in a savepoint of its own."""


class UnitOfWork(Protocol[T_co]):
    """Reads and writes in `session`, never commits; may run twice (see above)."""

    def __call__(self, session: Session, run: Run, /) -> T_co: ...


@dataclass(frozen=True, slots=True)
class Unit:
    work: UnitOfWork[Any]
    lock: tuple[str, str] | None = None
    """(kind, id) of the resource the unit reads to change, if any."""


def alone(session: Session) -> bool:
    """Whether the unit running in `session` runs alone (for the store's own functions,
    which are given the session, not the run)."""
    return bool(session.info.get(ALONE))
