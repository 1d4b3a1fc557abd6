"""The billing platform's CreditCategory (seeds/003, OpenCell) fits ours field by field:
each of its fields is either kept (and where) or deliberately left out (and why)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask

from helpers import seed
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.history_pb2 import (
    ChangeKind,
    FieldChange,
    ListChangesRequest,
    ResourceChange,
    ResourceType,
)

KEPT = {
    "code": "CreditCategory.code",
    "description": "CreditCategory.description",
    "descriptionI18n": "CreditCategory.description_i18n",
    "id": "CreditCategory.id",
    "version": "CreditCategory.etag",
    "auditable.created": "CreditCategory.create_time",
    "auditable.creator": "CreditCategory.created_by",
    "auditable.updated": "CreditCategory.update_time",
    "auditable.lastModified": "CreditCategory.update_time",
    "auditable.updater": "CreditCategory.updated_by",
    "auditable.lastUser": "CreditCategory.updated_by",
    "auditableFields": "ListChanges",
    "auditableFields[].fieldName": "FieldChange.path",
    "auditableFields[].previousState": "FieldChange.before",
    "auditableFields[].currentState": "FieldChange.after",
    "auditableFields[].auditType": "ResourceChange.change_kind",
}
"""Seed field → where ours keeps it (message.field)."""

LEFT_OUT = {
    "parentEntity": "OpenCell's entity hierarchy; a category here stands on its own",
    "parentEntityType": "OpenCell's entity hierarchy, as above",
    "provider": "OpenCell's tenant and its billing configuration, not the category's data",
    "transient": "OpenCell's persistence state (JPA), meaningless on the wire",
    "notified": "OpenCell's notification bookkeeping; here every change is an event",
    "historized": "OpenCell's history bookkeeping; here every change is in the history",
    "appendGeneratedCode": "OpenCell's code generator; codes here are the caller's",
    "codeChanged": "always false here: a code never changes",
    "descriptionOrCode": "derived display text (description, else code), for clients to make",
    "descriptionAndCode": "derived display text, as above",
    "referenceDescription": "derived display text, as above",
    "referenceCode": "derived: the code itself",
    "auditableFields[].notfiable": "a per-field switch; here every field's change is an event",
    "auditableFields[].historable": "a per-field switch; here every field is in the history",
    "auditableFields[].notified": "OpenCell's notification bookkeeping, as above",
    "auditableFields[].historized": "OpenCell's history bookkeeping, as above",
}
"""Seed field → why ours has no such field."""

OURS = {
    message.DESCRIPTOR.name: message.DESCRIPTOR
    for message in (CreditCategory, FieldChange, ResourceChange)
}


def seed_fields(data: dict[str, Any]) -> set[str]:
    """The example's fields: top level, `auditable.x` and `auditableFields[].x`."""
    fields = set(data)
    fields |= {f"auditable.{name}" for name in data["auditable"]}
    fields |= {f"auditableFields[].{name}" for item in data["auditableFields"] for name in item}
    return fields - {"auditable"}


def test_every_seed_field_is_kept_or_left_out_with_a_reason() -> None:
    fields = seed_fields(seed("seed_credit_category"))
    assert fields == set(KEPT) | set(LEFT_OUT)
    assert not set(KEPT) & set(LEFT_OUT)
    assert all(len(reason) > 20 for reason in LEFT_OUT.values())


def test_what_is_kept_names_a_real_field_of_ours() -> None:
    for seed_field, ours in KEPT.items():
        if ours == "ListChanges":
            continue
        message, name = ours.split(".")
        assert name in OURS[message].fields_by_name, (seed_field, ours)


async def test_the_seed_example_is_expressible(stub) -> None:
    """The seed's code, description and translations make a category (its placeholder
    language keys, `property1`/`property2`, become tags); its audit fields and field
    history come back in our fields, which map onto the seed's shape."""
    data = seed("seed_credit_category")
    translations = dict(zip(("en", "fr"), data["descriptionI18n"].values(), strict=True))
    made = await stub.CreateCreditCategory(
        pb.CreateCreditCategoryRequest(
            credit_category=CreditCategory(
                code=data["code"], description=data["description"], description_i18n=translations
            )
        )
    )
    changed = await stub.UpdateCreditCategory(
        pb.UpdateCreditCategoryRequest(
            credit_category=CreditCategory(id=made.id, description="changed"),
            update_mask=FieldMask(paths=["description"]),
        )
    )
    history = await stub.ListChanges(
        ListChangesRequest(
            resource_type=ResourceType.RESOURCE_TYPE_CREDIT_CATEGORY, resource_id=made.id
        )
    )
    ours = json_format.MessageToDict(changed)
    as_seed = {
        "code": ours["code"],
        "description": ours["description"],
        "descriptionI18n": ours["descriptionI18n"],
        "id": ours["id"],
        "version": int(ours["etag"]),
        "auditable": {
            "created": ours["createTime"],
            "creator": ours["createdBy"],
            "updated": ours["updateTime"],
            "lastModified": ours["updateTime"],
            "updater": ours["updatedBy"],
            "lastUser": ours["updatedBy"],
        },
        "auditableFields": [
            {
                "fieldName": field.path,
                "auditType": ChangeKind.Name(change.change_kind),
                "previousState": json_format.MessageToDict(field.before),
                "currentState": json_format.MessageToDict(field.after),
            }
            for change in history.changes
            for field in change.field_changes
        ],
    }
    # Every field the seed's example has and we keep is filled from our answer.
    assert seed_fields(as_seed) == set(KEPT) - {"auditableFields"} | {"auditableFields"}
    assert all(value not in ("", None) for value in as_seed["auditable"].values())
    assert as_seed["auditableFields"][0] == {
        "fieldName": "description",
        "auditType": "CHANGE_KIND_UPDATE",
        "previousState": data["description"],
        "currentState": "changed",
    }
    assert as_seed["descriptionI18n"] == translations and as_seed["version"] == 2
