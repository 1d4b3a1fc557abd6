"""References between resources: each must name a resource that exists, and comes back
with that resource's href and name (and id, description, status) filled in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from customer_management.domain.errors import FailedPrecondition, PreconditionViolation
from customer_management.domain.kinds import Kind, M, RefSlot
from customer_management.domain.outputs import href_base
from customer_management.store import resources


def resolve(
    session: Session,
    kind: Kind[M],
    resource: M,
    base_url: str,
    known: Mapping[tuple[str, str], Mapping[str, resources.Target]] | None = None,
) -> None:
    """Checks that every reference names an existing resource and copies its name in.

    `known`: the targets already read, by kind and key (`id`, `code`) and then by that
    key's value, in place of a query (bulk loads).
    """
    by_kind: dict[tuple[str, str], list[RefSlot]] = {}
    for slot in kind.references(resource):
        by_kind.setdefault((slot.kind, slot.key), []).append(slot)
    missing: list[RefSlot] = []
    for (target_kind, key), slots in by_kind.items():
        found = (
            known.get((target_kind, key), {})
            if known is not None
            else resources.targets(session, target_kind, (slot.value for slot in slots), key)
        )
        prefix = href_base(base_url, target_kind)
        for slot in slots:
            target = found.get(slot.value)
            if target is None:
                missing.append(slot)
                continue
            _fill(slot.ref, prefix + target.id, target)
    if missing:
        raise FailedPrecondition(
            "references name resources that do not exist: "
            + ", ".join(f"{slot.path} ({slot.kind} {slot.value})" for slot in missing),
            reason="REFERENCE_NOT_FOUND",
            violations=[
                PreconditionViolation(
                    "REFERENCE_NOT_FOUND", f"{slot.kind}/{slot.value}", f"named by {slot.path}"
                )
                for slot in missing
            ],
        )


def _fill(ref: Any, href: str, target: resources.Target) -> None:
    fields = ref.DESCRIPTOR.fields_by_name
    ref.id = target.id
    ref.href = href
    for name in ("name", "description", "status"):
        if name in fields:
            setattr(ref, name, getattr(target, name))
