"""CreditCategory: reference data that accounts name by code (an extension of TMF629)."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.common_pb2 import CreditCategoryRef
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.events_pb2 import EventType

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def category(stub, code: str = "GOLD", **fields) -> CreditCategory:
    return await stub.CreateCreditCategory(
        pb.CreateCreditCategoryRequest(credit_category=CreditCategory(code=code, **fields))
    )


async def account(stub, code: str, name: str = "acct") -> CustomerAccount:
    return await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(
                name=name, account_type="billing", credit_category=CreditCategoryRef(code=code)
            )
        )
    )


async def test_a_category_keeps_its_code_description_and_translations(stub) -> None:
    created = await category(
        stub, "GOLD", description="Gold", description_i18n={"fr": "Or", "pt-BR": "Ouro"}
    )
    assert created.href == f"https://cm.example/tmf/creditCategory/{created.id}"
    assert (created.etag, created.created_by) == ("1", "anonymous")
    got = await stub.GetCreditCategory(pb.GetCreditCategoryRequest(id=created.id))
    assert got == created
    assert dict(got.description_i18n) == {"fr": "Or", "pt-BR": "Ouro"}
    by_code = await stub.GetCreditCategory(pb.GetCreditCategoryRequest(code="GOLD"))
    assert by_code.id == created.id
    await fails(
        stub.GetCreditCategory(pb.GetCreditCategoryRequest(code="NONE")), grpc.StatusCode.NOT_FOUND
    )
    other = await category(stub, "SILVER")
    info = await fails(
        stub.GetCreditCategory(pb.GetCreditCategoryRequest(id=other.id, code="GOLD")), FAILED
    )
    assert info["reason"] == "SEVERAL_MATCHES"
    assert sorted(info["subjects"]) == sorted(
        [f"credit_category/{created.id}", f"credit_category/{other.id}"]
    )


async def test_codes_are_required_unique_and_bounded(stub) -> None:
    await category(stub, "GOLD")
    info = await fails(category(stub, "GOLD"), grpc.StatusCode.ALREADY_EXISTS)
    assert info["reason"] == "CODE_TAKEN"
    info = await fails(category(stub, ""), INVALID)
    assert info["fields"] == ["credit_category.code"]
    info = await fails(category(stub, "x" * 256, description="y" * 256), INVALID)
    assert sorted(info["fields"]) == ["credit_category.code", "credit_category.description"]
    assert (await category(stub, "x" * 255, description="y" * 255)).code == "x" * 255


async def test_language_tags_must_be_bcp47(stub) -> None:
    info = await fails(
        category(stub, description_i18n={"english": "Gold", "en_US": "Gold", "de": "x" * 256}),
        INVALID,
    )
    assert sorted(info["fields"]) == [
        "credit_category.description_i18n.de",
        "credit_category.description_i18n.en_US",
        "credit_category.description_i18n.english",
    ]
    # A key that is not a plain word is named in backticks (AIP-161).
    info = await fails(category(stub, description_i18n={"pt BR": "Ouro"}), INVALID)
    assert info["fields"] == ["credit_category.description_i18n.`pt BR`"]
    made = await category(stub, description_i18n={"zh-Hant-TW": "金", "de-CH-1996": "Gold"})
    assert set(made.description_i18n) == {"zh-Hant-TW", "de-CH-1996"}


async def test_the_code_never_changes(stub) -> None:
    created = await category(stub, "GOLD", description="Gold")
    changed = CreditCategory(id=created.id, code="PLATINUM")
    info = await fails(
        stub.UpdateCreditCategory(pb.UpdateCreditCategoryRequest(credit_category=changed)),
        INVALID,
    )
    assert info["fields"] == ["credit_category.code"]
    updated = await stub.UpdateCreditCategory(
        pb.UpdateCreditCategoryRequest(
            credit_category=CreditCategory(id=created.id, description="Golden"),
            update_mask=FieldMask(paths=["description"]),
        )
    )
    assert (updated.code, updated.description, updated.etag) == ("GOLD", "Golden", "2")


async def test_accounts_name_a_category_by_code_and_get_it_filled_in(stub) -> None:
    gold = await category(stub, "GOLD", description="Gold")
    created = await account(stub, "GOLD")
    assert created.credit_category == CreditCategoryRef(
        code="GOLD", id=gold.id, href=gold.href, description="Gold"
    )
    # What a caller puts in the output-only fields of the reference is ignored.
    sent = CustomerAccount(
        name="b",
        account_type="billing",
        credit_category=CreditCategoryRef(code="GOLD", id="forged", description="forged"),
    )
    other = await stub.CreateCustomerAccount(pb.CreateCustomerAccountRequest(customer_account=sent))
    assert other.credit_category.id == gold.id
    assert other.credit_category.description == "Gold"


async def test_an_unknown_code_fails_the_write_with_its_path(stub) -> None:
    info = await fails(account(stub, "NOPE"), FAILED)
    assert info["reason"] == "REFERENCE_NOT_FOUND"
    assert info["subjects"] == ["credit_category/NOPE"]
    info = await fails(
        stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(
                customer_account=CustomerAccount(
                    name="a", account_type="b", credit_category=CreditCategoryRef(id="x")
                )
            )
        ),
        INVALID,
    )
    assert info["fields"] == ["customer_account.credit_category.code"]


async def test_a_category_in_use_cannot_be_deleted(stub) -> None:
    gold = await category(stub, "GOLD")
    first = await account(stub, "GOLD", "one")
    second = await account(stub, "GOLD", "two")
    info = await fails(
        stub.DeleteCreditCategory(pb.DeleteCreditCategoryRequest(id=gold.id)), FAILED
    )
    assert info["reason"] == "RESOURCE_IN_USE"
    assert sorted(info["subjects"]) == sorted(
        [f"customer_account/{first.id}", f"customer_account/{second.id}"]
    )
    for held in (first, second):
        await stub.UpdateCustomerAccount(
            pb.UpdateCustomerAccountRequest(
                customer_account=CustomerAccount(id=held.id),
                update_mask=FieldMask(paths=["credit_category"]),
            )
        )
    await stub.DeleteCreditCategory(pb.DeleteCreditCategoryRequest(id=gold.id))
    await fails(
        stub.GetCreditCategory(pb.GetCreditCategoryRequest(id=gold.id)), grpc.StatusCode.NOT_FOUND
    )


async def test_accounts_filter_by_category_code(stub) -> None:
    await category(stub, "GOLD")
    await category(stub, "SILVER")
    gold = await account(stub, "GOLD", "g")
    await account(stub, "SILVER", "s")
    for expression in ('creditCategory.code = "GOLD"', 'credit_category.code = "GOLD"'):
        page = await stub.ListCustomerAccounts(pb.ListCustomerAccountsRequest(filter=expression))
        assert [a.id for a in page.customer_accounts] == [gold.id]


async def test_categories_list_filter_and_order_by_code(stub) -> None:
    for code in ("B", "C", "A"):
        await category(stub, code)
    page = await stub.ListCreditCategories(pb.ListCreditCategoriesRequest(order_by="code"))
    assert [c.code for c in page.credit_categories] == ["A", "B", "C"]
    page = await stub.ListCreditCategories(
        pb.ListCreditCategoriesRequest(filter='code = "C"', read_mask=FieldMask(paths=["code"]))
    )
    assert [(c.code, c.description) for c in page.credit_categories] == [("C", "")]
    await fails(
        stub.ListCreditCategories(pb.ListCreditCategoriesRequest(filter='name = "A"')), INVALID
    )


def test_the_three_notifications_extend_the_nine() -> None:
    names = [EventType.Name(value) for value in EventType.values()]
    assert names[10:] == [
        "EVENT_TYPE_CREDIT_CATEGORY_CREATE_NOTIFICATION",
        "EVENT_TYPE_CREDIT_CATEGORY_UPDATE_NOTIFICATION",
        "EVENT_TYPE_CREDIT_CATEGORY_DELETE_NOTIFICATION",
    ]
    assert EventType.Value("EVENT_TYPE_PAYMENT_MEAN_DELETE_NOTIFICATION") == 9
