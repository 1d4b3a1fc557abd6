"""The OpenAPI 3 document of the REST binding, built from the proto descriptors and the
resource services, so it says what the code does: the attributes, their types and
behaviours (output-only, required, write-only) and the filterable attributes.

Per TMF's convention, `X` is a resource as returned, `X_FVO` as created and `X_MVO`
as patched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from customer_management.domain.kinds import COLLECTIONS
from customer_management.domain.listing import MAX_PAGE_SIZE
from customer_management.domain.service import ResourceService

INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
}
ANNOTATIONS = ("@type", "@baseType", "@schemaLocation", "@referredType")
"""TMF's type annotations: accepted and ignored in requests."""
ERROR = {"$ref": "#/components/schemas/Error"}


def document(base_path: str, services: Mapping[str, ResourceService[Any]]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _error_schema(), **_hub_schemas()}
    paths: dict[str, Any] = {}
    for kind, service in services.items():
        descriptor = service.kind.message_type.DESCRIPTOR
        _add_schemas(descriptor, schemas)
        name = descriptor.name
        collection = f"/{COLLECTIONS[kind]}"
        filters = sorted(f for f in service.kind.fields if "_" not in f)
        paths[collection] = {
            "get": _list_operation(name, filters),
            "post": _create_operation(name),
        }
        paths[collection + "/{id}"] = {
            "parameters": [_path_id()],
            "get": {
                "operationId": f"retrieve{name}",
                "summary": f"A {name} by id",
                "parameters": [_fields_parameter()],
                "responses": _responses("200", name, etag=True),
            },
            "patch": _patch_operation(name),
            "delete": {
                "operationId": f"delete{name}",
                "summary": f"Deletes a {name}",
                "parameters": [_if_match()],
                "responses": _responses("204", None),
            },
        }
    paths["/hub"] = {
        "post": {
            "operationId": "registerListener",
            "summary": "Registers a listener of notifications",
            "requestBody": _body("Hub_FVO", ("application/json",)),
            "responses": _responses("201", "Hub", location=True),
        }
    }
    paths["/hub/{id}"] = {
        "parameters": [_path_id()],
        "get": {
            "operationId": "retrieveListener",
            "summary": "A listener and how its deliveries go",
            "responses": _responses("200", "Hub"),
        },
        "delete": {
            "operationId": "unregisterListener",
            "summary": "Unregisters a listener",
            "responses": _responses("204", None),
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "TMF629 Customer Management (REST binding)",
            "version": "2.0.0",
            "description": "The gRPC service's resources in TMF JSON; see docs/rest.md.",
        },
        "servers": [{"url": base_path}],
        "paths": paths,
        "components": {"schemas": schemas},
    }


# -- schemas from descriptors -------------------------------------------------------------


def _behaviors(field: FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _add_schemas(descriptor: Descriptor, schemas: dict[str, Any]) -> None:
    """`X`, `X_FVO` and (top level) `X_MVO` of `descriptor` and every message it holds."""
    pending = [descriptor]
    while pending:
        message = pending.pop()
        if message.name in schemas:
            continue
        schemas[message.name] = _schema(message, "")
        schemas[message.name + "_FVO"] = _schema(message, "_FVO")
        for field in message.fields:
            if field.message_type is not None and not _is_timestamp(field) and not _is_map(field):
                pending.append(field.message_type)
    schemas[descriptor.name + "_MVO"] = _schema(descriptor, "_MVO")


def _schema(message: Descriptor, variant: str) -> dict[str, Any]:
    """As returned (``), as created (`_FVO`: no output-only fields, required ones
    required) or as a merge patch (`_MVO`: nothing required, null removes)."""
    properties: dict[str, Any] = {}
    required = []
    for field in message.fields:
        behaviors = _behaviors(field)
        if variant and field_behavior_pb2.OUTPUT_ONLY in behaviors:
            continue
        if not variant and field_behavior_pb2.INPUT_ONLY in behaviors:
            continue
        schema = _field_schema(field, "_FVO" if variant else "")
        if field.GetOptions().deprecated:
            schema["deprecated"] = True
        if variant == "_MVO":
            schema["nullable"] = True
        properties[field.json_name] = schema
        if variant == "_FVO" and field_behavior_pb2.REQUIRED in behaviors:
            required.append(field.json_name)
    if variant:
        for name in ANNOTATIONS:
            properties[name] = {"type": "string"}
    built: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        built["required"] = required
    return built


def _field_schema(field: FieldDescriptor, variant: str) -> dict[str, Any]:
    if _is_map(field):  # a JSON object of strings (descriptionI18n)
        assert field.message_type is not None
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": dict(_SCALARS[value.type])}
    if _is_timestamp(field):
        item: dict[str, Any] = {"type": "string", "format": "date-time"}
    elif field.message_type is not None:
        item = {"$ref": f"#/components/schemas/{field.message_type.name}{variant}"}
    else:
        item = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": item}
    if "$ref" in item:
        return {"allOf": [item]}  # a $ref takes no siblings (nullable) in OpenAPI 3.0
    return item


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


def _is_timestamp(field: FieldDescriptor) -> bool:
    return field.message_type is not None and (
        field.message_type.full_name == "google.protobuf.Timestamp"
    )


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "TMF error; `fieldViolations` names each bad attribute or parameter.",
        "required": ["code", "reason", "status"],
        "properties": {
            "code": {"type": "string"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "status": {"type": "string"},
            "fieldViolations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string"},
                        "description": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    }


def _hub_schemas() -> dict[str, Any]:
    return {
        "Hub": {
            "type": "object",
            "required": ["id", "callback", "query", "status", "failures", "createTime"],
            "properties": {
                "id": {"type": "string"},
                "callback": {"type": "string"},
                "query": {"type": "string"},
                "status": {"type": "string", "enum": ["active", "failing"]},
                "failures": {"type": "integer"},
                "lastError": {"type": "string"},
                "lastDeliveryTime": {"type": "string", "format": "date-time"},
                "createTime": {"type": "string", "format": "date-time"},
            },
            "additionalProperties": False,
        },
        "Hub_FVO": {
            "type": "object",
            "required": ["callback"],
            "properties": {
                "callback": {"type": "string", "format": "uri"},
                "query": {"type": "string"},
                **{name: {"type": "string"} for name in ANNOTATIONS},
            },
            "additionalProperties": False,
        },
    }


# -- operations ---------------------------------------------------------------------------


def _list_operation(name: str, filters: list[str]) -> dict[str, Any]:
    attribute_parameters = [
        {
            "name": path,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "equals one of these comma-separated values; `"
            + path
            + ".gt`, `.gte`, `.lt`, `.lte` and `.ne` compare instead",
        }
        for path in filters
    ]
    return {
        "operationId": f"list{name}",
        "summary": f"{name}s matching the attribute filters, a page at a time",
        "parameters": [
            _fields_parameter(),
            {
                "name": "offset",
                "in": "query",
                "schema": {"type": "integer", "minimum": 0},
                "description": "how many matches to skip",
            },
            {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                "description": "at most this many (default 50)",
            },
            {
                "name": "sort",
                "in": "query",
                "schema": {"type": "string"},
                "description": "attributes to order by, `-` for descending: `name,-createTime`",
            },
            *attribute_parameters,
        ],
        "responses": {
            "200": {
                "description": "the page",
                "headers": {
                    "X-Total-Count": _integer_header("matches in all"),
                    "X-Result-Count": _integer_header("matches in this response"),
                },
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "array",
                            "items": {"$ref": f"#/components/schemas/{name}"},
                        }
                    }
                },
            },
            "default": _error_response(),
        },
    }


def _create_operation(name: str) -> dict[str, Any]:
    return {
        "operationId": f"create{name}",
        "summary": f"Creates a {name}",
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "schema": {"type": "string", "maxLength": 128},
                "description": "a retry with the same key returns the first result",
            }
        ],
        "requestBody": _body(f"{name}_FVO", ("application/json",)),
        "responses": _responses("201", name, location=True, etag=True),
    }


def _patch_operation(name: str) -> dict[str, Any]:
    return {
        "operationId": f"patch{name}",
        "summary": f"Changes a {name} (JSON merge patch; id and href cannot change)",
        "parameters": [_if_match()],
        "requestBody": _body(f"{name}_MVO", ("application/merge-patch+json", "application/json")),
        "responses": _responses("200", name, etag=True),
    }


def _body(schema: str, media_types: tuple[str, ...]) -> dict[str, Any]:
    ref = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    return {"required": True, "content": {media: ref for media in media_types}}


def _responses(
    status: str, schema: str | None, *, location: bool = False, etag: bool = False
) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "done"}
    headers = {}
    if location:
        headers["Location"] = {"schema": {"type": "string"}, "description": "the new href"}
    if etag:
        headers["ETag"] = {"schema": {"type": "string"}, "description": "the version"}
    if headers:
        success["headers"] = headers
    if schema is not None:
        ref = {"$ref": f"#/components/schemas/{schema}"}
        success["content"] = {"application/json": {"schema": ref}}
    return {status: success, "default": _error_response()}


def _error_response() -> dict[str, Any]:
    return {
        "description": "TMF error (400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 503 …)",
        "content": {"application/json": {"schema": ERROR}},
    }


def _integer_header(description: str) -> dict[str, Any]:
    return {"schema": {"type": "integer", "minimum": 0}, "description": description}


def _path_id() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _fields_parameter() -> dict[str, Any]:
    return {
        "name": "fields",
        "in": "query",
        "schema": {"type": "string"},
        "description": "comma-separated first-level attributes to return (id always is)",
    }


def _if_match() -> dict[str, Any]:
    return {
        "name": "If-Match",
        "in": "header",
        "schema": {"type": "string"},
        "description": 'the ETag last read ("3"); a newer version answers 412',
    }
