"""Field masks: which fields an Update changes (AIP-134, AIP-161) and which a Get or List
returns (AIP-157 read masks, TMF's `fields=`), in proto or JSON names."""

from __future__ import annotations

from typing import Any, TypeVar

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from customer_management.domain.errors import FieldViolation, InvalidArgument
from tmf629.v1 import (
    common_pb2,
    credit_category_pb2,
    customer_account_pb2,
    customer_pb2,
    payment_mean_pb2,
)

T = TypeVar("T", bound=Message)
WILDCARD = "*"


def _output_only(descriptor: Descriptor) -> frozenset[str]:
    names = set()
    for field in descriptor.fields:
        behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            names.add(field.name)
    return frozenset(names)


OUTPUT_ONLY: dict[str, frozenset[str]] = {
    message.DESCRIPTOR.full_name: _output_only(message.DESCRIPTOR)
    for message in (
        customer_pb2.Customer,
        customer_account_pb2.CustomerAccount,
        payment_mean_pb2.PaymentMean,
        credit_category_pb2.CreditCategory,
        common_pb2.CustomerRef,
        common_pb2.CustomerAccountRef,
        common_pb2.PaymentMeanRef,
        common_pb2.CreditCategoryRef,
    )
}
"""The fields of resources and references that only the server sets; what callers send
there is ignored."""


def effective_paths(patch: Message, mask: FieldMask) -> list[str]:
    """The snake_case paths an Update writes.

    No mask: every populated top-level field. `*`: every field. Otherwise the mask's
    paths, in proto or JSON spelling; unknown paths are INVALID_ARGUMENT and paths to
    output-only fields are ignored.
    """
    descriptor = patch.DESCRIPTOR
    ignored = OUTPUT_ONLY[descriptor.full_name]
    if not mask.paths:
        return [field.name for field, _ in patch.ListFields() if field.name not in ignored]
    if WILDCARD in mask.paths:
        if len(mask.paths) > 1:
            raise InvalidArgument(
                "update_mask: `*` cannot be combined with other paths",
                violations=[FieldViolation("update_mask", "`*` must be the only path")],
            )
        return [field.name for field in descriptor.fields if field.name not in ignored]
    paths: list[str] = []
    violations = []
    for i, path in enumerate(mask.paths):
        resolved = _resolve(descriptor, path)
        if resolved is None:
            violations.append(
                FieldViolation(
                    f"update_mask.paths[{i}]", f"{path!r} is not a field of {descriptor.name}"
                )
            )
        elif resolved.split(".")[0] not in ignored:
            paths.append(resolved)
    if violations:
        raise InvalidArgument("update_mask names unknown fields", violations=violations)
    return paths


def read_paths(descriptor: Any, mask: FieldMask) -> list[str] | None:
    """The snake_case paths a read returns, always with `id`; None for every field."""
    if not mask.paths or WILDCARD in mask.paths:
        return None
    paths = {"id"}
    violations = []
    for i, path in enumerate(mask.paths):
        resolved = _resolve(descriptor, path)
        if resolved is None:
            violations.append(
                FieldViolation(
                    f"read_mask.paths[{i}]", f"{path!r} is not a field of {descriptor.name}"
                )
            )
        else:
            paths.add(resolved)
    if violations:
        raise InvalidArgument("read_mask names unknown fields", violations=violations)
    return sorted(paths)


def select(resource: T, paths: list[str] | None) -> T:
    """`resource` with only the fields at `paths` (all of them for None)."""
    if paths is None:
        return resource
    selected = type(resource)()
    FieldMask(paths=paths).MergeMessage(resource, selected)
    return selected


def _resolve(descriptor: Any, path: str) -> str | None:
    """`validFor.endDateTime` → `valid_for.end_date_time`; None if any part is unknown."""
    names = []
    current: Descriptor | None = descriptor
    for part in path.split("."):
        if current is None:
            return None  # a path cannot go below a scalar or a repeated field
        field = current.fields_by_name.get(part) or current.fields_by_camelcase_name.get(part)
        if field is None:
            field = next((f for f in current.fields if f.json_name == part), None)
        if field is None:
            return None
        names.append(field.name)
        # A path ends at a scalar, a list or a well-known type (a Timestamp is one value).
        message = field.message_type
        well_known = message is not None and message.full_name.startswith("google.protobuf.")
        current = None if field.is_repeated or well_known else message
    return ".".join(names)


def merge(current: T, patch: T, paths: list[str]) -> T:
    """`current` with the fields at `paths` taken from `patch`; messages are replaced whole."""
    merged = type(current)()
    merged.CopyFrom(current)
    mask = FieldMask(paths=paths)
    mask.MergeMessage(patch, merged, replace_message_field=True, replace_repeated_field=True)
    return merged
