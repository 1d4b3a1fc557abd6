"""Rules of the CreditCategory resource: reference data accounts name by code."""

from __future__ import annotations

import langcodes

from customer_management.domain.kinds import Kind, RefSlot
from customer_management.domain.validation import Violations, key_problem, map_entry_path
from customer_management.store.mapping import MAPPINGS
from tmf629.v1.credit_category_pb2 import CreditCategory

CODE_MAX = 255
DESCRIPTION_MAX = 255
"""The seed's limits (its CreditCategory: code 1 to 255 characters, description at most 255)."""


class CreditCategoryKind(Kind[CreditCategory]):
    kind = "credit_category"
    field = "credit_category"
    message_type = CreditCategory
    stored = MAPPINGS["credit_category"]
    fields = stored.fields
    unique = ("code",)

    def check(
        self, resource: CreditCategory, previous: CreditCategory | None, v: Violations
    ) -> None:
        path = self.field
        if previous is not None and resource.code != previous.code:
            # Accounts hold the code: a category with another code is another category.
            v.add(f"{path}.code", "cannot change; create a category with the new code")
        elif v.require(f"{path}.code", resource.code) and (
            problem := key_problem(resource.code, CODE_MAX)
        ):
            v.add(f"{path}.code", problem)
        v.max_length(f"{path}.description", resource.description, DESCRIPTION_MAX)
        for tag, text in resource.description_i18n.items():
            here = map_entry_path(f"{path}.description_i18n", tag)
            if "_" in tag or not langcodes.tag_is_valid(tag):  # it reads en_US as en-US
                v.add(here, f"{tag!r} is not a BCP 47 language tag")
            v.max_length(here, text, DESCRIPTION_MAX)
            if "\x00" in text:  # check_message sees a map's keys, not its values
                v.add(here, "must not contain NUL characters")

    def references(self, resource: CreditCategory) -> list[RefSlot]:
        return []
