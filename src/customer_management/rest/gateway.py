"""The REST binding of TMF629 v2 (aiohttp): the same resource services as the gRPC API,
in TMF JSON, with TMF630 queries and hub notifications.

Handlers only adapt, as the servicer does: HTTP request in, domain call, TMF JSON out.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from google.protobuf.field_mask_pb2 import FieldMask

from customer_management.changes.hubs import Hubs, Listener
from customer_management.domain import attribute_filters
from customer_management.domain.errors import (
    Aborted,
    DomainError,
    FieldViolation,
    InvalidArgument,
)
from customer_management.domain.kinds import COLLECTIONS
from customer_management.domain.listing import MAX_PAGE_SIZE
from customer_management.domain.service import ResourceService
from customer_management.edge.callers import Callers, Credentials, access, subject
from customer_management.edge.methods import METHODS, Method
from customer_management.rest import openapi
from customer_management.rest.problems import problem, tmf_error
from customer_management.rest.representation import (
    attributes,
    from_json,
    in_json_terms,
    to_json,
)

log = logging.getLogger(__name__)
BASE_PATH = "/tmf-api/customerManagement/v2"
MAX_BODY = 1024 * 1024
MAX_DEPTH = 32
"""Nesting of a request body; the resources nest 6 levels at most."""
RESERVED = frozenset({"fields", "offset", "limit", "sort"})
MERGE_PATCH = "application/merge-patch+json"
PATCH_RETRIES = 20
"""Read-merge-write rounds a PATCH without If-Match makes when others write in between."""
OPENAPI_PATH = f"{BASE_PATH}/openapi.json"
_KINDS = {collection: kind for kind, collection in COLLECTIONS.items()}
_RELABEL = {
    "read_mask": "fields",
    "order_by": "sort",
    "page_size": "limit",
    "request_id": "Idempotency-Key",
}
"""List request fields, as the REST query parameters that carry them."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    def __init__(
        self,
        services: dict[str, ResourceService[Any]],
        hubs: Hubs,
        caller_table: Callers | None,
        ssl_context: ssl.SSLContext | None = None,
        grace_period: float = 10.0,
    ) -> None:
        self.services = services
        self.grace_period = grace_period
        self.hubs = hubs
        self.callers = caller_table
        self.ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self.document = openapi.document(BASE_PATH, services)
        self.app = web.Application(middlewares=[self._call], client_max_size=MAX_BODY)
        self._methods: dict[web.AbstractRoute, Method] = {}
        """The gRPC method each route stands for: the scope it needs is that method's."""
        for collection, kind in _KINDS.items():
            resource = _Resource(services[kind])
            name = services[kind].kind.message_type.DESCRIPTOR.name
            path = f"{BASE_PATH}/{collection}"
            self._route("GET", path, resource.list, f"List{_plural(name)}")
            self._route("POST", path, resource.create, f"Create{name}")
            self._route("GET", path + "/{id}", resource.get, f"Get{name}")
            self._route("PATCH", path + "/{id}", resource.patch, f"Update{name}")
            self._route("DELETE", path + "/{id}", resource.delete, f"Delete{name}")
        # Hub listeners receive the change stream: managing them needs WatchEvents' scope.
        self._route("POST", f"{BASE_PATH}/hub", self.register, "WatchEvents")
        self._route("GET", f"{BASE_PATH}/hub/{{id}}", self.listener, "WatchEvents")
        self._route("DELETE", f"{BASE_PATH}/hub/{{id}}", self.unregister, "WatchEvents")
        self._route("GET", OPENAPI_PATH, self.openapi, None)

    def _route(self, verb: str, path: str, handler: Handler, method: str | None) -> None:
        route = self.app.router.add_route(verb, path, handler)
        if method is not None:
            self._methods[route] = METHODS[method]  # a name the .proto lacks fails here

    async def start(self, sock: socket.socket) -> None:
        """Serves on `sock`, bound beforehand so hrefs can name its port."""
        # No access log: its request lines would carry filter values (emails, numbers).
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.grace_period,  # what requests in flight get at shutdown
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- hub --------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        fields = {"callback", "query"}
        if unknown := [k for k in data if k not in fields and not str(k).startswith("@")]:
            raise _invalid(unknown[0], "is not an attribute of a hub listener")
        callback, query = data.get("callback") or "", data.get("query") or ""
        for name, value in (("callback", callback), ("query", query)):
            if not isinstance(value, str):
                raise _invalid(name, "must be a JSON string")
        listener = await self.hubs.register(callback, query)
        location = f"{_origin(request)}{BASE_PATH}/hub/{listener.id}"
        return _json(_listener_json(listener), status=201, headers={"Location": location})

    async def listener(self, request: web.Request) -> web.Response:
        return _json(_listener_json(await self.hubs.get(request.match_info["id"])))

    async def unregister(self, request: web.Request) -> web.Response:
        await self.hubs.delete(request.match_info["id"])
        return _no_content()

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(self.document)

    # -- every request -------------------------------------------------------------------

    @web.middleware
    async def _call(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request as the gRPC API takes its calls: the caller's bearer token or
        client certificate must grant the scope of the method its route stands for, the
        caller is who created_by / updated_by name while it runs, and every failure is
        answered as TMF error JSON."""
        try:
            method = self._methods.get(request.match_info.route)
            if method is None:
                if request.path == OPENAPI_PATH:  # open to all
                    return await handler(request)
                method = _unrouted(request)
            credentials = Credentials(
                request.headers.get("Authorization", ""), _certificate_subject(request)
            )
            with access(self.callers, method, credentials) as granted:
                if granted.refused is not None:
                    raise granted.refused
                return await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code = error.reason.upper().replace(" ", "_")
            document = tmf_error(error.status, code, error.reason, error.reason)
            headers = {k: v for k, v in error.headers.items() if k.lower() == "allow"}
            return _json(document, status=error.status, headers=headers)
        except Exception as error:
            status, document = problem(error)
            challenge = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return _json(document, status=status, headers=challenge)


class _Resource:
    """The five operations on one collection."""

    def __init__(self, service: ResourceService[Any]) -> None:
        self.service = service
        self.kind = service.kind
        self.descriptor = service.kind.message_type.DESCRIPTOR

    async def list(self, request: web.Request) -> web.Response:
        query = request.query
        offset = _natural(query, "offset", 0, None)
        limit = _natural(query, "limit", 0, MAX_PAGE_SIZE) or 0
        if "limit" in query and limit == 0:
            raise _invalid("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
        criteria = attribute_filters.parse(
            (name, value) for name, value in query.items() if name not in RESERVED
        )
        filter = attribute_filters.as_filter(criteria, self.kind.fields, self.kind.phone_region)
        with self._json_terms():
            page = await self.service.list(
                limit,
                "",
                filter,
                _order_by(query.get("sort", "")),
                self._fields(query),
                include_total_size=True,
                offset=offset,
            )
        headers = {"X-Total-Count": str(page.total_size), "X-Result-Count": str(len(page.items))}
        return _json([to_json(item) for item in page.items], headers=headers)

    async def get(self, request: web.Request) -> web.Response:
        with self._json_terms():
            found = await self.service.get(request.match_info["id"], self._fields(request.query))
        return _json(to_json(found), headers=_etag(found.etag))

    async def create(self, request: web.Request) -> web.Response:
        _require_json(request, ("application/json",))
        data = await _json_body(request)
        with self._json_terms():
            resource = from_json(data, self.kind.message_type)
            created = self.service.message(
                await self.service.create(resource, request.headers.get("Idempotency-Key", ""))
            )
        headers = {"Location": created.href, **_etag(created.etag)}
        return _json(to_json(created), status=201, headers=headers)

    async def patch(self, request: web.Request) -> web.Response:
        """JSON merge patch (RFC 7386) of the current representation; fields the patch
        names are written, so nested objects keep what the patch leaves out."""
        _require_json(request, (MERGE_PATCH, "application/json"))
        patch = await _json_body(request)
        id = request.match_info["id"]
        if_match = _if_match(request)
        mask = FieldMask(
            paths=[_field_name(self.descriptor, key) for key in patch if key[:1] != "@"]
        )
        with self._json_terms():
            for _ in range(PATCH_RETRIES):
                current = await self.service.get(id, fresh=True)  # its etag must be current
                for name in ("id", "href"):
                    if name in patch and patch[name] != getattr(current, name):
                        raise _invalid(name, "cannot be changed")
                resource = from_json(merge_patch(to_json(current), patch), self.kind.message_type)
                resource.id = id
                resource.etag = if_match or current.etag
                try:
                    updated = self.service.message(await self.service.update(resource, mask))
                except Aborted:
                    if if_match:
                        raise
                    continue  # changed since it was read: merge into the newer version
                return _json(to_json(updated), headers=_etag(updated.etag))
        raise DomainError(
            "the resource kept changing while the patch was applied; send it again",
            code="ABORTED",
            reason="CONCURRENT_CHANGE",
        )

    async def delete(self, request: web.Request) -> web.Response:
        with self._json_terms():
            await self.service.delete(request.match_info["id"], _if_match(request))
        return _no_content()

    def _fields(self, query: Any) -> FieldMask:
        """`fields=a,b`: first-level attributes to return (`id` always is)."""
        text = query.get("fields", "")
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [n for n in names if n not in attributes(self.descriptor)]
        if unknown:
            known = ", ".join(attributes(self.descriptor))
            raise _invalid("fields", f"names {unknown[0]!r}, not an attribute (use {known})")
        return FieldMask(paths=[_field_name(self.descriptor, name) for name in names])

    @contextmanager
    def _json_terms(self) -> Iterator[None]:
        """Domain errors with their field paths as the caller wrote them."""
        try:
            yield
        except DomainError as error:
            error = in_json_terms(error, self.descriptor, self.kind.field)
            if isinstance(error, InvalidArgument) and any(
                v.field.split(".")[0] in _RELABEL for v in error.violations
            ):
                violations = [
                    FieldViolation(_RELABEL.get(v.field.split(".")[0], v.field), v.description)
                    for v in error.violations
                ]
                message = "; ".join(f"{v.field} {v.description}" for v in violations)
                error = InvalidArgument(message, violations=violations)
            raise error from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _field_name(descriptor: Any, json_name: str) -> str:
    field = attributes(descriptor).get(json_name)
    return str(field.name) if field is not None else json_name


def _order_by(sort: str) -> str:
    """`sort=name,-createTime` as a List order_by."""
    terms = []
    for part in sort.split(","):
        name = part.strip()
        if not name:
            continue
        if name.startswith("-"):
            terms.append(f"{name[1:]} desc")
        else:
            terms.append(name.removeprefix("+"))
    return ", ".join(terms)


def _natural(query: Any, name: str, default: int, limit: int | None) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 12 or (limit is not None and int(text) > limit):
        bound = f"between 0 and {limit}" if limit is not None else "a whole number, 0 or more"
        raise _invalid(name, f"must be {bound}")
    return int(text)


def _if_match(request: web.Request) -> str:
    """The version `If-Match` names (`"3"`, `W/"3"` or `3`); `*` or none: any."""
    value = request.headers.get("If-Match", "").strip()
    if value == "*":
        return ""
    return value.removeprefix("W/").strip('"')


def _etag(etag: str) -> dict[str, str]:
    return {"ETag": f'"{etag}"'} if etag else {}


def _require_json(request: web.Request, accepted: tuple[str, ...]) -> None:
    if request.content_type not in accepted:
        raise DomainError(
            f"the body must be {' or '.join(accepted)}, not {request.content_type or 'untyped'}",
            code="INVALID_ARGUMENT",
            reason="UNSUPPORTED_MEDIA_TYPE",
        )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _invalid("(body)", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise _invalid("(body)", "must be a JSON object")
    if _depth(data) > MAX_DEPTH:
        raise _invalid("(body)", f"nests deeper than {MAX_DEPTH} levels")
    return data


def _depth(data: Any) -> int:
    """How deeply `data` nests, counted without recursion (the body is the caller's)."""
    deepest, pending = 0, [(data, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _invalid(field: str, problem_: str) -> InvalidArgument:
    return InvalidArgument(f"{field} {problem_}", violations=[FieldViolation(field, problem_)])


def _certificate_subject(request: web.Request) -> str:
    """`CN=…` of the client certificate TLS verified (mutual TLS); empty without one."""
    transport = request.transport
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return subject(value)
    return ""


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _listener_json(listener: Listener) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": listener.id,
        "callback": listener.callback,
        "query": listener.query,
        "status": listener.status,
        "failures": listener.failures,
        "createTime": _time(listener.create_time),
    }
    if listener.last_error:
        document["lastError"] = listener.last_error
    if listener.last_delivery_time is not None:
        document["lastDeliveryTime"] = _time(listener.last_delivery_time)
    return document


def _time(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


def _json(
    document: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(document, status=status, headers=headers, dumps=_dumps)


def _dumps(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _no_content() -> web.Response:
    return web.Response(status=204, content_type="application/json")


def _unrouted(request: web.Request) -> Method:
    """The method a request no route takes (its answer is 404 or 405) is taken for, so
    that only a caller who may call it learns that much: a hub path's WatchEvents, else
    a read for GET and a write for anything else."""
    if request.path.startswith(f"{BASE_PATH}/hub"):
        return METHODS["WatchEvents"]
    return METHODS["GetCustomer" if request.method == "GET" else "UpdateCustomer"]


def _plural(name: str) -> str:
    """The plural the service's List methods use: Customers, CreditCategories."""
    return name[:-1] + "ies" if name.endswith("y") else name + "s"
