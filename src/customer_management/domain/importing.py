"""Bulk import of TMF JSON: one resource per line, the kinds mixed.

Each line goes through the checks a Create makes (`ResourceService.prepare`, references,
unique keys); a line that fails them is reported and skipped, and the load goes on. A
line keeps its `id` when it has one, so the references between the lines of an export
still hold; a reference must name a resource stored before or earlier in the file.
Lines are written in batches, one transaction and one statement per table each, and
every imported resource gets its Create event like any other.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from google.protobuf import json_format
from sqlalchemy.orm import Session

from customer_management.domain.errors import DomainError, InvalidArgument
from customer_management.domain.ids import new_id
from customer_management.domain.pins import hash_pin
from customer_management.domain.service import NewRows, ResourceService
from customer_management.domain.validation import key_problem
from customer_management.store import resources
from customer_management.store.errors import StoreConflict
from customer_management.store.units import Run

IMPORT = "import"
"""The created_by / updated_by of imported resources."""
TYPES = {
    "Customer": "customer",
    "CustomerAccount": "customer_account",
    "PaymentMean": "payment_mean",
    "CreditCategory": "credit_category",
}
"""The `@type` each line carries, and the kind it names."""


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str


@dataclass
class Report:
    loaded: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)
    deferred: list[tuple[int, str]] = field(default_factory=list)
    """Lines whose references were not (yet) stored, when the importer defers them."""

    def add(self, other: Report) -> None:
        self.loaded.update(other.loaded)
        self.rejected.extend(other.rejected)
        self.deferred.extend(other.deferred)


@dataclass(frozen=True)
class _Line:
    number: int
    text: str
    kind: str
    id: str
    resource: Any
    pin: str


class Importer:
    def __init__(self, services: Mapping[str, ResourceService[Any]], *, defer: bool = False):
        """`defer`: a line whose reference is missing goes to `Report.deferred` for a later
        pass instead of being rejected (parallel loads, where order is not kept)."""
        self.services = services
        self.database = next(iter(services.values())).database
        self.defer = defer

    async def load(self, batch: Iterable[tuple[int, str]], report: Report) -> None:
        """Imports one batch of numbered lines, adding what happened to `report`."""
        ready = [line for number, text in batch if (line := self._parse(number, text, report))]
        if not ready:
            return
        pins = {
            line.number: hash_pin(line.pin, self.services[line.kind].settings.pin_pepper)
            for line in ready
            if line.pin
        }
        try:
            outcomes = [await self.database.write(partial(self._write, lines=ready, pins=pins))]
        except StoreConflict:
            # A constraint the checks did not foresee (a concurrent writer): find the line.
            outcomes = []
            for line in ready:
                try:
                    outcomes.append(
                        await self.database.write(partial(self._write, lines=[line], pins=pins))
                    )
                except StoreConflict as error:
                    outcomes.append(Report(rejected=[Rejected(line.number, f"refused: {error}")]))
        for outcome in outcomes:
            report.add(outcome)

    def _parse(self, number: int, text: str, report: Report) -> _Line | None:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("a line must hold one JSON object")
            type_name = data.get("@type")
            kind = TYPES.get(type_name) if isinstance(type_name, str) else None
            if kind is None:
                raise ValueError(f"@type must be one of {', '.join(TYPES)}, not {type_name!r}")
            id = data.get("id") or new_id()
            if not isinstance(id, str) or (problem := key_problem(id)):
                raise ValueError(f"id {problem or 'must be a string'}")
            fields = {k: v for k, v in data.items() if not k.startswith("@")}
            service = self.services[kind]
            message = json_format.ParseDict(fields, service.kind.message_type())
            resource, pin = service.prepare(message)
        except InvalidArgument as error:
            shown = "; ".join(f"{v.field} {v.description}" for v in error.violations[:5])
            report.rejected.append(Rejected(number, shown or error.message))
            return None
        except (ValueError, json_format.ParseError) as error:
            report.rejected.append(Rejected(number, str(error).splitlines()[0][:300]))
            return None
        return _Line(number, text, kind, id, resource, pin)

    def _write(
        self, session: Session, run: Run, *, lines: list[_Line], pins: Mapping[int, str]
    ) -> Report:
        """One transaction for the batch: the checks that need the database, then one
        insert per table. Re-runnable, as the database's units of work must be."""
        report = Report()
        resources.bulk(session)
        known = self._targets(session, lines)
        taken = self._taken(session, lines)
        rows = resources.NewRows()
        now = datetime.now(UTC)
        for line in lines:
            service = self.services[line.kind]
            resource = type(line.resource)()
            resource.CopyFrom(line.resource)  # resolving fills references in
            try:
                if (line.kind, "id", line.id) in taken:
                    raise DomainError(f"id {line.id} already exists", code="ALREADY_EXISTS")
                service.resolve(session, resource, known)
                new = service.new_rows(resource, line.id, pins.get(line.number), now, IMPORT)
                for name in service.kind.unique:
                    if (value := new.values.get(name)) is not None:
                        if (line.kind, name, value) in taken:
                            raise DomainError(f"{name} {value!r} is taken", code="ALREADY_EXISTS")
                        taken.add((line.kind, name, value))
            except DomainError as error:
                if self.defer and error.reason == "REFERENCE_NOT_FOUND":
                    report.deferred.append((line.number, line.text))
                else:
                    report.rejected.append(Rejected(line.number, error.message))
                continue
            taken.add((line.kind, "id", line.id))
            target = _target(new)
            known.setdefault((line.kind, "id"), {})[line.id] = target
            if target.code:  # the key other lines name a credit category by
                known.setdefault((line.kind, "code"), {})[target.code] = target
            rows.add(line.kind, new.id, new.values, new.children)
            service.record_new(session, new, IMPORT)
            report.loaded[line.kind] += 1
        rows.insert(session)
        return report

    def _targets(
        self, session: Session, lines: list[_Line]
    ) -> dict[tuple[str, str], dict[str, resources.Target]]:
        """What the batch's references name, by kind and key, then by the key's value."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for line in lines:
            for slot in self.services[line.kind].kind.references(line.resource):
                wanted.setdefault((slot.kind, slot.key), set()).add(slot.value)
        return {
            (kind, key): resources.targets(session, kind, values, key)
            for (kind, key), values in wanted.items()
        }

    def _taken(self, session: Session, lines: list[_Line]) -> set[tuple[str, str, str]]:
        """The ids and unique keys of the batch that stored resources already hold."""
        taken: set[tuple[str, str, str]] = set()
        by_kind: dict[str, list[_Line]] = {}
        for line in lines:
            by_kind.setdefault(line.kind, []).append(line)
        for kind, of_kind in by_kind.items():
            service = self.services[kind]
            ids = [line.id for line in of_kind]
            taken.update((kind, "id", id) for id in resources.holders(session, kind, "id", ids))
            for name in service.kind.unique:
                values = [v for line in of_kind if (v := getattr(line.resource, name, ""))]
                if values:
                    holders = resources.holders(session, kind, name, values)
                    taken.update((kind, name, value) for value in holders)
        return taken


def _target(new: NewRows) -> resources.Target:
    values = new.values
    return resources.Target(
        new.id,
        values.get("name", ""),
        values.get("description", ""),
        values.get("status", ""),
        values.get("code", ""),
    )
