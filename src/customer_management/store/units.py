"""The contract of a unit of work: what `Database.write` runs, and how it may run.

A unit is a function of a Session that reads and writes in it and never commits. The
write runner group-commits concurrent units: it runs them together in one transaction,
and when that fails it runs each again alone, in a savepoint of its own. So a unit must
be re-runnable, and may leave to a constraint a check that it makes when alone (a
request id or a unique key taken): `alone(session)` tells it which run it is in.

A unit that names the row it updates (`Unit.lock`) has it locked and read together with
the other units' rows, in one statement before any of them runs (resources.lock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

ALONE = "units.alone"


@dataclass(frozen=True, slots=True)
class Unit:
    work: Callable[[Session], Any]
    lock: tuple[str, str] | None = None
    """(kind, id) of the resource the unit reads to change, if any."""


def alone(session: Session) -> bool:
    """Whether the unit runs in a savepoint of its own, after its batch failed together."""
    return bool(session.info.get(ALONE))
