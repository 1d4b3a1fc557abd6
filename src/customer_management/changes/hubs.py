"""Hub listeners: TMF's REST notifications. Who may be called back, which events each
listener wants, and where its delivery stands.

A listener starts at the position of the change stream when it registers, and each
notification it is sent moves that position on; the REST gateway delivers them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from customer_management.changes.watching import Watching
from customer_management.domain import attribute_filters
from customer_management.domain.attribute_filters import Criterion
from customer_management.domain.errors import FieldViolation, InvalidArgument, NotFound
from customer_management.domain.ids import new_id, require_id
from customer_management.domain.notifications import KIND_OF_TYPE, TYPE_OF_TMF_NAME
from customer_management.domain.validation import key_problem
from customer_management.store import hubs as store
from customer_management.store.database import Database
from customer_management.store.models import HubListener
from customer_management.store.units import Run

CALLBACK_MAX = 2048
QUERY_MAX = 2048
FAILING_AFTER = 5
"""Failed deliveries in a row after which a listener is reported as failing."""
_PAYLOAD_NAMES = ("customer", "customerAccount", "paymentMean", "creditCategory")
"""What `event.` is followed by in TMF's attribute paths of notifications."""


@dataclass(frozen=True)
class Interest:
    """What a listener's `query` asks for."""

    event_types: frozenset[int]
    criteria: tuple[Criterion, ...]

    def wants(self, event_type: int, resource: Mapping[str, Any]) -> bool:
        """Whether an event of this type about `resource` (TMF JSON) is to be sent."""
        return (not self.event_types or event_type in self.event_types) and all(
            criterion.matches(resource) for criterion in self.criteria
        )


@dataclass(frozen=True)
class Listener:
    id: str
    callback: str
    query: str
    interest: Interest
    resume_token: str
    create_time: datetime
    failures: int
    last_error: str | None
    last_delivery_time: datetime | None

    @property
    def status(self) -> str:
        return "failing" if self.failures >= FAILING_AFTER else "active"


class Hubs:
    def __init__(
        self,
        database: Database,
        watching: Watching,
        allowed_hosts: Sequence[str],
    ) -> None:
        self.database = database
        self.watching = watching
        self.allowed_hosts = frozenset(host.strip().lower() for host in allowed_hosts if host)
        self._fields = {kind: s.kind.fields for kind, s in watching.services.items()}

    async def register(self, callback: str, query: str) -> Listener:
        self.check_callback(callback)
        interest = self.interest(query)
        token = await self.watching.now_token()
        row = HubListener(
            id=new_id(),
            callback=callback,
            query=query,
            resume_token=token,
            create_time=datetime.now(UTC),
            failures=0,
        )

        def unit(session: Session, run: Run) -> Listener:
            store.add(session, row)
            return _listener(row, interest)

        return await self.database.write(unit)

    async def get(self, id: str) -> Listener:
        require_id(id)
        row = await self.database.read(lambda session: store.get(session, id))
        if row is None:
            raise _not_found(id)
        return _listener(row, self.interest(row.query))

    async def delete(self, id: str) -> None:
        require_id(id)
        if not await self.database.write(lambda session, _: store.remove(session, id)):
            raise _not_found(id)

    # -- delivery ---------------------------------------------------------------------

    async def claim(self, owner: str, lease: timedelta) -> list[Listener]:
        now = datetime.now(UTC)
        rows = await self.database.write(
            lambda session, _: store.claim(session, owner, now, now + lease)
        )
        return [_listener(row, self.interest(row.query)) for row in rows]

    async def release(self, owner: str) -> None:
        await self.database.write(lambda session, _: store.release(session, owner))

    async def delivered(
        self, listener: Listener, owner: str, token: str, sent: datetime | None
    ) -> bool:
        return await self.database.write(
            lambda session, _: store.delivered(session, listener.id, owner, token, sent)
        )

    async def failed(self, listener: Listener, owner: str, error: str) -> int | None:
        return await self.database.write(
            lambda session, _: store.failed(session, listener.id, owner, error)
        )

    # -- rules ------------------------------------------------------------------------

    def check_callback(self, callback: str) -> None:
        """Only http(s) URLs on a configured host: the service must not be made to
        call arbitrary addresses (its own network included)."""
        problem = key_problem(callback, CALLBACK_MAX) if callback else "is required"
        if problem is None:
            url = urllib.parse.urlsplit(callback)
            try:
                port = url.port
            except ValueError:
                port = None
                problem = "has an invalid port"
            host = (url.hostname or "").lower()
            if problem is not None:
                pass
            elif url.scheme not in ("http", "https") or not host:
                problem = "must be an absolute http or https URL"
            elif url.username is not None or url.password is not None:
                problem = "must not carry credentials"
            elif host not in self.allowed_hosts and f"{host}:{port}" not in self.allowed_hosts:
                allowed = ", ".join(sorted(self.allowed_hosts)) or "none are configured"
                problem = f"is not on an allowed host (--hub-allowed-hosts: {allowed})"
        if problem is not None:
            raise InvalidArgument(
                f"callback {problem}",
                reason="CALLBACK_NOT_ALLOWED",
                violations=[FieldViolation("callback", problem)],
            )

    def interest(self, query: str) -> Interest:
        """`eventType=A,B` and attribute filters of the resource (`status=Approved`, or
        with TMF's prefix `event.customer.status=Approved`), joined by `&`."""
        if len(query) > QUERY_MAX:
            raise _bad_query(f"is longer than {QUERY_MAX} characters")
        pairs = [
            (name.strip(), value.strip())
            for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True)
        ]
        types: set[int] = set()
        rest = []
        for name, value in pairs:
            if name != "eventType":
                rest.append((_unprefixed(name), value))
                continue
            for type_name in value.split(","):
                if type_name not in TYPE_OF_TMF_NAME:
                    known = ", ".join(TYPE_OF_TMF_NAME)
                    raise _bad_query(f"names event type {type_name!r} (use one of {known})")
                types.add(TYPE_OF_TMF_NAME[type_name])
        try:
            criteria = attribute_filters.parse(rest)
        except InvalidArgument as error:
            raise _bad_query(error.message) from None
        kinds = {KIND_OF_TYPE[t] for t in types} or set(self._fields)
        for criterion in criteria:
            if not any(criterion.path in self._fields[kind] for kind in kinds):
                raise _bad_query(
                    f"filters on {criterion.path!r}, which no resource of its event types has"
                )
        return Interest(frozenset(types), tuple(criteria))


def _unprefixed(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "event" and parts[1] in _PAYLOAD_NAMES:
        return ".".join(parts[2:])
    return name


def _bad_query(problem: str) -> InvalidArgument:
    return InvalidArgument(f"query {problem}", violations=[FieldViolation("query", problem)])


def _not_found(id: str) -> NotFound:
    return NotFound(f"hub listener {id} does not exist", metadata={"resource": "hub", "id": id})


def _listener(row: HubListener, interest: Interest) -> Listener:
    return Listener(
        id=row.id,
        callback=row.callback,
        query=row.query,
        interest=interest,
        resume_token=row.resume_token,
        create_time=row.create_time,
        failures=row.failures,
        last_error=row.last_error,
        last_delivery_time=row.last_delivery_time,
    )
