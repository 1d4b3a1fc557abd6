"""What every resource kind promises, checked for each: list, etags, request ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.common_pb2 import Characteristic, ContactMedium, CustomerRef
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.payment_mean_pb2 import CreditCard, PaymentMean

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION


def card() -> CreditCard:
    result = CreditCard(number="4111111111111111")
    expires = datetime.now(UTC) + timedelta(days=400)
    # The same in every call, so a retry is the same request.
    result.expiration_date.FromDatetime(expires.replace(hour=0, minute=0, second=0, microsecond=0))
    return result


@dataclass(frozen=True)
class Kind:
    name: str  # CustomerAccount …
    field: str  # customer_account …
    plural: str  # customer_accounts …
    make: Any
    immutable: tuple[str, ...] = ()
    """Fields an update must send unchanged."""

    def method(self, verb: str) -> str:
        plural = "".join(word.capitalize() for word in self.plural.split("_"))
        return {"List": f"List{plural}"}.get(verb, f"{verb}{self.name}")

    def rpc(self, stub: Any, verb: str) -> Any:
        return getattr(stub, self.method(verb))

    def request(self, verb: str, **fields: Any) -> Any:
        return getattr(pb, f"{self.method(verb)}Request")(**fields)


KINDS = [
    Kind("Customer", "customer", "customers", lambda i: Customer(name=f"c{i}")),
    Kind(
        "CustomerAccount",
        "customer_account",
        "customer_accounts",
        lambda i: CustomerAccount(name=f"a{i}", account_type="x"),
    ),
    Kind(
        "PaymentMean",
        "payment_mean",
        "payment_means",
        lambda i: PaymentMean(name=f"p{i}", type="CreditCard", credit_card=card()),
    ),
    Kind(
        "CreditCategory",
        "credit_category",
        "credit_categories",
        lambda i: CreditCategory(code=f"cc{i}", description=f"category {i}"),
        immutable=("code",),
    ),
]


@pytest.fixture(params=KINDS, ids=lambda kind: kind.name)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


async def create(stub: Any, kind: Kind, i: int, request_id: str = "") -> Any:
    return await kind.rpc(stub, "Create")(
        kind.request("Create", **{kind.field: kind.make(i)}, request_id=request_id)
    )


async def test_list_pages_every_kind(stub, kind) -> None:
    created = [await create(stub, kind, i) for i in range(3)]
    first = await kind.rpc(stub, "List")(kind.request("List", page_size=2))
    rest = await kind.rpc(stub, "List")(
        kind.request("List", page_size=2, page_token=first.next_page_token)
    )
    listed = [*getattr(first, kind.plural), *getattr(rest, kind.plural)]
    assert [r.id for r in listed] == [r.id for r in reversed(created)]
    assert not rest.next_page_token


async def test_stale_etags_abort_update_and_delete_of_every_kind(stub, kind) -> None:
    created = await create(stub, kind, 0)
    changed = kind.make(1)
    changed.id, changed.etag = created.id, created.etag
    for name in kind.immutable:
        setattr(changed, name, getattr(created, name))
    updated = await kind.rpc(stub, "Update")(kind.request("Update", **{kind.field: changed}))
    assert updated.etag != created.etag
    await fails(
        kind.rpc(stub, "Update")(kind.request("Update", **{kind.field: changed})),
        grpc.StatusCode.ABORTED,
    )
    await fails(
        kind.rpc(stub, "Delete")(kind.request("Delete", id=created.id, etag=created.etag)),
        grpc.StatusCode.ABORTED,
    )
    await kind.rpc(stub, "Delete")(kind.request("Delete", id=created.id, etag=updated.etag))
    await fails(
        kind.rpc(stub, "Get")(kind.request("Get", id=created.id)), grpc.StatusCode.NOT_FOUND
    )


async def test_request_ids_make_every_create_idempotent(stub, kind) -> None:
    first = await create(stub, kind, 0, request_id="once")
    assert await create(stub, kind, 0, request_id="once") == first
    page = await kind.rpc(stub, "List")(kind.request("List"))
    assert [r.id for r in getattr(page, kind.plural)] == [first.id]
    info = await fails(create(stub, kind, 1, request_id="once"), FAILED)
    assert info["reason"] == "REQUEST_ID_REUSED"


async def test_one_answer_names_every_bad_field(stub) -> None:
    account = CustomerAccount(pin="pin0", description="x" * 5000)
    account.payment_plan.add(priority=-1, number_of_payments=-1, type="t", status="s")
    account.contact.add().contact_medium.append(ContactMedium())
    info = await fails(
        stub.CreateCustomerAccount(pb.CreateCustomerAccountRequest(customer_account=account)),
        INVALID,
    )
    assert sorted(info["fields"]) == sorted(
        [
            "customer_account.pin",
            "customer_account.description",
            "customer_account.name",
            "customer_account.account_type",
            "customer_account.payment_plan[0].priority",
            "customer_account.payment_plan[0].number_of_payments",
            "customer_account.payment_plan[0].payment_mean",
            "customer_account.contact[0].contact_medium[0].type",
            "customer_account.contact[0].contact_medium[0].medium",
        ]
    )
    info = await fails(
        stub.CreateCustomer(
            pb.CreateCustomerRequest(
                customer=Customer(name="c", characteristic=[Characteristic(value="v")])
            )
        ),
        INVALID,
    )
    assert info["fields"] == ["customer.characteristic[0].name"]


@pytest.mark.parametrize(
    ("amount", "stored"),
    # 18 digits arrive as 123456789012.12346 (17): refused, not stored rounded. (A number
    # that the double rounds to a shorter one, like 99999999999.999999 to 1e11, cannot be
    # told apart from that shorter one by the time it arrives.)
    [(123456789012.123456, None), (123456789.123456, "123456789.123456")],
)
async def test_amounts_a_json_number_cannot_carry_exactly_are_refused(stub, amount, stored) -> None:
    call = stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(name="a", account_type="x", credit_limit=amount)
        )
    )
    if stored is None:
        info = await fails(call, INVALID)
        assert info["fields"] == ["customer_account.credit_limit"]
    else:
        assert repr((await call).credit_limit) == stored


async def test_what_clients_put_in_a_reference_besides_its_id_is_ignored(stub) -> None:
    owner = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="owner")))
    ref = CustomerRef(id=owner.id, name="x" * 5000, href="h\x00", description="forged")
    account = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(name="a", account_type="x", customer=ref)
        )
    )
    assert account.customer == CustomerRef(id=owner.id, href=owner.href, name="owner")


async def test_missing_references_of_every_sort_are_named(stub) -> None:
    account = CustomerAccount(name="a", account_type="x")
    account.customer_account_relationship.add(relationship_type="peer").customer_account.add(
        id="gone"
    )
    info = await fails(
        stub.CreateCustomerAccount(pb.CreateCustomerAccountRequest(customer_account=account)),
        FAILED,
    )
    assert info["subjects"] == ["customer_account/gone"]
    customer = Customer(name="c")
    customer.payment_mean.add(id="gone")
    info = await fails(stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer)), FAILED)
    assert info["subjects"] == ["payment_mean/gone"]
