"""The standard methods of one resource kind: Create, Get, List, Update, Delete.

Each step's rule has its own module (ids, references, uniqueness, idempotency, pins,
outputs, masks); this one puts them in order. Writes run as units of work that the
database group-commits, each recording its event in the same transaction; Gets by id
are batched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic

from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from customer_management.domain import (
    callers,
    history,
    idempotency,
    listing,
    references,
    wire,
)
from customer_management.domain.cache import DELETED, GONE, ResourceCache
from customer_management.domain.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from customer_management.domain.idempotency import REQUEST_ID_MAX
from customer_management.domain.ids import check_key, new_id, require_id
from customer_management.domain.kinds import Kind, M
from customer_management.domain.masks import (
    OUTPUT_ONLY,
    WILDCARD,
    effective_paths,
    merge,
    read_paths,
    select,
)
from customer_management.domain.notifications import Change, changed_fields, header
from customer_management.domain.outputs import Outputs
from customer_management.domain.pins import hash_off_loop, take_pin
from customer_management.domain.settings import Settings
from customer_management.domain.uniqueness import check_unique
from customer_management.domain.validation import KEY_MAX, Violations, check_message
from customer_management.domain.wire import Encoded
from customer_management.store import history as history_store
from customer_management.store import outbox, resources
from customer_management.store import query as query_store
from customer_management.store.batching import Batcher, Outcome
from customer_management.store.database import Database
from customer_management.store.mapping import Children
from customer_management.store.resources import Stored
from customer_management.store.units import Run

_ALL = FieldMask()
MAX_RESOURCE_BYTES = 512 * 1024
MAX_PAGE_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class Page(Generic[M]):
    items: list[M]
    next_page_token: str
    total_size: int = 0


@dataclass(frozen=True)
class NewRows:
    id: str
    values: dict[str, Any]
    children: Children
    output: Encoded
    time: datetime


class ResourceService(Generic[M]):
    def __init__(
        self,
        kind: Kind[M],
        database: Database,
        settings: Settings,
        cache: ResourceCache | None = None,
    ) -> None:
        """`cache`: where Gets look first (see domain/cache.py); none: the database."""
        self.kind = kind
        self.database = database
        self.settings = settings
        self.cache = cache
        self.outputs = Outputs(kind, settings.base_url)
        self._method = f"Create{kind.message_type.DESCRIPTOR.name}"
        self._by_id: Batcher[str, Stored | None] = database.reader(self._fetch)

    # -- standard methods -------------------------------------------------------------

    async def create(self, resource: M, request_id: str) -> Encoded:
        if request_id:
            check_key("request_id", request_id, REQUEST_ID_MAX)
        resource, pin = self.prepare(resource)
        request_hash = idempotency.request_hash(resource) if request_id else ""
        pin_hash = await hash_off_loop(pin, self.settings.pin_pepper)
        by = callers.current.get()

        def unit(session: Session, run: Run) -> Encoded:
            # Together with other units, a request id used before is refused by its
            # key (and the batch runs again, each unit alone); alone, it is looked up.
            if request_id and run is Run.ALONE:
                resources.lock_request(session, request_id)
                first = resources.find_request(session, request_id)
                if first is not None:
                    return idempotency.replay(
                        self.kind.message_type,
                        self._method,
                        first.method,
                        first.request_hash,
                        first.response,
                        request_hash,
                    )
            self.resolve(session, resource)
            new = self.new_rows(resource, new_id(), pin_hash, datetime.now(UTC), by)
            if run is Run.ALONE:  # together, a unique key taken is refused by its index
                check_unique(session, self.kind, new.values, None)
            resources.insert(session, self.kind.kind, new.values)
            resources.replace_children(session, self.kind.kind, new.id, new.children, new=True)
            self.record_new(session, new, by)
            if request_id:
                resources.save_request(
                    session, request_id, self._method, request_hash, new.output.wire, new.time
                )
            return new.output

        return await self.database.write(unit)

    # -- the steps of a create, shared with the bulk import ---------------------------

    def prepare(self, resource: M) -> tuple[M, str]:
        """The caller's resource without output-only fields, validated, and its PIN."""
        resource = self._input(resource)
        v = Violations()
        pin = take_pin(resource, self.kind.field, v)
        self._validate(resource, previous=None, v=v)
        return resource, pin

    def new_rows(
        self, resource: M, id: str, pin_hash: str | None, now: datetime, by: str
    ) -> NewRows:
        """The rows that store a validated new resource whose references are resolved."""
        out: Any = resource
        out.created_by = out.updated_by = by
        body = self._body(resource)
        values = self.kind.stored.columns(resource)
        if pin_hash is not None:
            values["pin_hash"] = pin_hash
        values.update(id=id, version=1, create_time=now, update_time=now, body=body)
        output = Encoded(id, body + self.outputs.tail(id, 1, now, now))
        return NewRows(
            id, values, self.kind.stored.children(resource, self.kind.phone_region), output, now
        )

    async def get(self, id: str, read_mask: FieldMask = _ALL, *, fresh: bool = False) -> M:
        """The resource; `fresh`: read from the database, whatever the cache holds."""
        paths = read_paths(self.kind.message_type.DESCRIPTOR, read_mask)
        found = self.message(await self.get_wire(id, fresh=fresh))
        return select(found, paths)

    async def get_wire(self, id: str, *, fresh: bool = False) -> Encoded:
        """The resource as it goes on the wire: from the cache when it holds it, else
        the stored body with the output-only fields appended (protobuf merges
        concatenated messages), so a Get never parses and serialises the resource."""
        require_id(id)
        cache = self.cache
        if cache is not None and not fresh:
            wire = cache.get(self.kind.kind, id)
            if wire is not None:
                if not wire:  # GONE
                    raise self.not_found(id)
                return Encoded(id, wire)
        ticket = cache.ticket() if cache is not None else 0
        row = await self._by_id.submit(id)
        if row is None:
            raise self.not_found(id)
        wire = self.outputs.wire(row)
        if cache is not None:
            cache.fill(self.kind.kind, id, row.version, wire, ticket)
        return Encoded(id, wire)

    async def lookup(self, id: str, keys: Mapping[str, str], read_mask: FieldMask = _ALL) -> M:
        """Get by id, by a unique caller-assigned key, or by both when they agree."""
        given = {name: value for name, value in keys.items() if value}
        if not given:
            return await self.get(id, read_mask)
        if id:
            require_id(id)
        for name, value in given.items():
            check_key(name, value, KEY_MAX)
        paths = read_paths(self.kind.message_type.DESCRIPTOR, read_mask)

        wanted = {"id": id, **given} if id else given

        def unit(session: Session) -> M:
            found: dict[str, str] = {}  # identifier → id of the resource it names
            for name, value in wanted.items():  # each name is its column
                if holder := resources.holders(session, self.kind.kind, name, [value]).get(value):
                    found[name] = holder
            if missing := {name: value for name, value in wanted.items() if name not in found}:
                raise NotFound(
                    f"no {self.kind.kind} has "
                    + " or ".join(f"{name} {value!r}" for name, value in missing.items()),
                    metadata={"resource": self.kind.kind, **missing},
                )
            if len(set(found.values())) > 1:
                raise FailedPrecondition(
                    f"several resources of kind {self.kind.kind} match: "
                    + ", ".join(f"{name} names {other}" for name, other in found.items()),
                    reason="SEVERAL_MATCHES",
                    violations=[
                        PreconditionViolation("SEVERAL_MATCHES", f"{self.kind.kind}/{other}", name)
                        for name, other in found.items()
                    ],
                )
            row = self._row(session, next(iter(found.values())))
            return select(self.outputs.message(row), paths)

        return await self.database.read(unit)

    async def list(
        self,
        page_size: int,
        page_token: str,
        filter: str,
        order_by: str,
        read_mask: FieldMask = _ALL,
        include_total_size: bool = False,
        offset: int = 0,
    ) -> Page[M]:
        """`offset`: rows to skip first, for the REST binding (List pages with tokens)."""
        query = listing.parse(self.kind, page_size, page_token, filter, order_by)
        paths = read_paths(self.kind.message_type.DESCRIPTOR, read_mask)

        def unit(session: Session) -> Page[M]:
            rows = query_store.page(
                session,
                self.kind.kind,
                condition=query.condition,
                order=query.order,
                after=query.after,
                limit=query.page_size + 1,
                offset=offset,
            )
            # A page also ends before it outgrows what a default client accepts (4 MiB).
            page: list[resources.Listed] = []
            size = 0
            for row in rows[: query.page_size]:
                size += len(row.body)
                if page and size > MAX_PAGE_BYTES:
                    break
                page.append(row)
            more = len(page) < len(rows)
            token = listing.next_token(query, page[-1]) if more else ""
            total = (
                query_store.count(session, self.kind.kind, query.condition)
                if include_total_size
                else 0
            )
            return Page([select(self.outputs.message(row), paths) for row in page], token, total)

        return await self.database.read(unit)

    async def update(self, resource: M, update_mask: FieldMask) -> Encoded:
        id, etag = resource.id, resource.etag  # type: ignore[attr-defined]
        require_id(id, f"{self.kind.field}.id")
        patch = self._input(resource)
        paths = effective_paths(patch, update_mask)
        v = Violations()
        pin = take_pin(patch, self.kind.field, v)
        v.raise_if_any()
        await self._precheck(id, etag, before_hashing=bool(pin))
        pin_hash = await hash_off_loop(pin, self.settings.pin_pepper)
        if "pin" in paths and not pin and (not update_mask.paths or WILDCARD in update_mask.paths):
            paths.remove("pin")  # the PIN is write-only: kept unless set or named in the mask

        by = callers.current.get()

        def unit(session: Session, run: Run) -> Encoded:
            row = resources.lock(session, self.kind.kind, id)
            if row is None:
                raise self.not_found(id)
            _check_etag(row, etag)
            current = self.kind.message_type.FromString(row.body)
            updated = merge(current, patch, paths)
            if "pin" in paths:
                setattr(updated, "pin_set", bool(pin))  # noqa: B010 (only accounts have one)
            self._validate(updated, previous=current)
            self.resolve(session, updated)
            if updated == current and "pin" not in paths:
                return Encoded(
                    row.id, self.outputs.wire(row)
                )  # nothing changes: same etag, no write
            setattr(updated, "updated_by", by)  # noqa: B010 (every resource has one)
            body = self._body(updated)
            changed = changed_fields(current, updated)
            values = self.kind.stored.columns(updated)
            if run is Run.ALONE:  # together, a unique key taken is refused by its index
                check_unique(session, self.kind, values, row.id)
            if "pin" in paths:
                values.update(pin_hash=pin_hash, pin_failures=0, pin_locked_until=None)
                changed.append("pin")  # that it changed, never what it is
            now = datetime.now(UTC)
            values.update(version=row.version + 1, update_time=now, body=body)
            resources.update(session, self.kind.kind, id, values)
            if self.kind.stored.child_fields.intersection(changed):
                resources.replace_children(
                    session,
                    self.kind.kind,
                    id,
                    self.kind.stored.children(updated, self.kind.phone_region),
                    previous=self.kind.stored.children(current, self.kind.phone_region),
                )
            written = resources.Written(id, row.version + 1, row.create_time, now, body)
            output = Encoded(id, self.outputs.wire(written))
            self.record(
                session,
                Change.UPDATE,
                output,
                written.version,
                now,
                changed,
                by=by,
                before=row.body,
                after=body,
                secrets=("pin",) if "pin" in paths else (),
            )
            return output

        return await self.database.write(unit, lock=(self.kind.kind, id))

    async def delete(self, id: str, etag: str) -> None:
        require_id(id)
        await self._precheck(id, etag)
        by = callers.current.get()

        def unit(session: Session, run: Run) -> None:
            row = resources.lock(session, self.kind.kind, id)
            if row is None:
                raise self.not_found(id)
            _check_etag(row, etag)
            if found := resources.referrers(session, self.kind.kind, id):
                raise FailedPrecondition(
                    f"{self.kind.kind} {id} is still referenced by "
                    + ", ".join(f"{r.kind} {r.id}" for r in found),
                    reason="RESOURCE_IN_USE",
                    violations=[
                        PreconditionViolation(
                            "REFERENCED",
                            f"{r.kind}/{r.id}",
                            f"its {r.path} names {self.kind.kind} {id}",
                        )
                        for r in found
                    ],
                )
            last = Encoded(row.id, self.outputs.wire(row))
            resources.delete(session, self.kind.kind, id)
            self.record(
                session,
                Change.DELETE,
                last,
                DELETED,
                datetime.now(UTC),
                by=by,
                before=row.body,
                last_version=row.version,
            )

        await self.database.write(unit, lock=(self.kind.kind, id))

    # -- helpers ----------------------------------------------------------------------

    async def _precheck(self, id: str, etag: str, *, before_hashing: bool = False) -> None:
        """Refuses a stale etag the cache already shows before the write queue, and,
        before a costly PIN hash, a missing resource or stale etag (with a batched read).
        The unit checks again on the row it locks: a refusal there costs the batch
        nothing, so a read only for this check would cost more than it saves."""
        cached = self.cache.get(self.kind.kind, id) if self.cache is not None else None
        if cached is not None:
            if not cached:  # GONE
                raise self.not_found(id)
            if etag:
                version = int(self.kind.message_type.FromString(cached).etag)  # type: ignore[attr-defined]
                _check_version(version, etag)
            return
        if not before_hashing:
            return
        row = await self._by_id.submit(id)
        if row is None:
            raise self.not_found(id)
        _check_etag(row, etag)

    def _input(self, resource: M) -> M:
        """A copy of the caller's resource without the fields only the server sets."""
        copy = self.kind.message_type()
        copy.CopyFrom(resource)
        self.kind.screen(copy)
        copy.DiscardUnknownFields()  # fields this version does not know are never stored
        for name in OUTPUT_ONLY[copy.DESCRIPTOR.full_name]:
            copy.ClearField(name)
        for slot in self.kind.references(copy):
            for name in OUTPUT_ONLY[slot.ref.DESCRIPTOR.full_name]:
                slot.ref.ClearField(name)
        return copy

    def _validate(self, resource: M, previous: M | None, v: Violations | None = None) -> None:
        """Raises one InvalidArgument naming every bad field (with those already in `v`)."""
        v = v or Violations()
        check_message(resource, self.kind.field, v)
        self.kind.check(resource, previous, v)
        for slot in self.kind.references(resource):
            v.require(f"{slot.path}.{slot.key}", slot.value)
        v.raise_if_any()

    def _body(self, resource: M) -> bytes:
        """The stored form; bounded, because filled-in references can multiply a request."""
        body = resource.SerializeToString()
        if len(body) > MAX_RESOURCE_BYTES:
            path = self.kind.field
            problem = (
                f"is {len(body)} bytes with its references filled in; at most {MAX_RESOURCE_BYTES}"
            )
            raise InvalidArgument(f"{path} {problem}", violations=[FieldViolation(path, problem)])
        return body

    def resolve(
        self,
        session: Session,
        resource: M,
        known: Mapping[tuple[str, str], Mapping[str, resources.Target]] | None = None,
    ) -> None:
        """Checks every reference and fills it in (see domain/references.py)."""
        references.resolve(session, self.kind, resource, self.settings.base_url, known)

    def record_new(self, session: Session, new: NewRows, by: str) -> None:
        """Adds a new resource's Create event and history entry."""
        secrets = ("pin",) if new.values.get("pin_hash") else ()
        self.record(
            session,
            Change.CREATE,
            new.output,
            1,
            new.time,
            by=by,
            after=new.values["body"],
            secrets=secrets,
        )

    def record(
        self,
        session: Session,
        change: Change,
        resource: Encoded,
        version: int,
        time: datetime,
        changed: Sequence[str] = (),
        *,
        by: str,
        before: bytes | None = None,
        after: bytes | None = None,
        secrets: Sequence[str] = (),
        last_version: int = 0,
    ) -> None:
        """Adds the change's event, `resource` as the change left it (the last state of
        a deleted one) at `version`, and its history entry: the stored form `before` and
        `after` it, by caller `by`, and the `secrets` it set (named, never shown). A
        delete's event says DELETED; its history entry names `last_version`."""
        if self.settings.history:
            history_store.record(
                session,
                kind=self.kind.kind,
                resource_id=resource.id,
                change_kind=history.CHANGE_KINDS[change],
                time=time,
                caller=by,
                version=last_version or version,
                before=before,
                after=after,
                secrets=secrets,
            )
        built = header(self.kind.kind, change, time, changed)
        outbox.record(
            session,
            event_type=built.event_type,
            resource_id=resource.id,
            event_time=time,
            body=wire.event(built, self.kind.kind, resource.wire),
            version=version,
            wire=GONE if change is Change.DELETE else resource.wire,
        )

    def _fetch(
        self, connection: Connection, ids: Sequence[str]
    ) -> Sequence[Outcome[Stored | None]]:
        """Gets by id, batched: concurrent Gets share one query."""
        found = resources.fetch(connection, self.kind.kind, ids)
        return [Outcome(value=found.get(id)) for id in ids]

    def _row(self, session: Session, id: str, *, for_update: bool = False) -> Stored:
        row = resources.get(session, self.kind.kind, id, for_update=for_update)
        if row is None:
            raise self.not_found(id)
        return row

    def not_found(self, id: str) -> NotFound:
        return NotFound(
            f"{self.kind.kind} {id} does not exist",
            metadata={"resource": self.kind.kind, "id": id},
        )

    def message(self, encoded: Encoded) -> M:
        return self.kind.message_type.FromString(encoded.wire)


def _check_etag(row: Stored, etag: str) -> None:
    _check_version(row.version, etag)


def _check_version(version: int, etag: str) -> None:
    if etag and etag != str(version):
        raise Aborted(
            f"etag {etag!r} is stale: the resource is now at {version}; read it again",
            metadata={"current_etag": str(version)},
        )
