"""Customer CRUD through a real server: output-only fields, masks, etags, request ids."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.json_format import ParseDict

from helpers import fails, own_stub
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.common_pb2 import Characteristic, ContactMedium, Medium, TimePeriod
from tmf629.v1.customer_pb2 import Customer

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def create(stub, **fields) -> Customer:
    return await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(**fields)))


async def test_create_sets_output_fields_and_get_returns_the_same(stub) -> None:
    created = await create(stub, name="Jane Doe", description="vip")
    assert created.id and created.etag == "1"
    assert created.href == f"https://cm.example/tmf/customer/{created.id}"
    assert created.status == "Created"  # the default lifecycle state
    assert created.create_time == created.update_time
    assert created.create_time.seconds > 0
    got = await stub.GetCustomer(pb.GetCustomerRequest(id=created.id))
    assert got == created


async def test_client_values_for_output_only_fields_are_ignored(stub) -> None:
    sent = Customer(name="Jane", id="mine", href="http://x/y", etag="99")
    sent.create_time.FromSeconds(1)
    created = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=sent))
    assert created.id != "mine" and created.etag == "1"
    assert created.href.endswith(created.id)
    assert created.create_time.seconds > 1


async def test_get_unknown_id_is_not_found_and_empty_id_invalid(stub) -> None:
    info = await fails(
        stub.GetCustomer(pb.GetCustomerRequest(id="nope")), grpc.StatusCode.NOT_FOUND
    )
    assert info["reason"] == "RESOURCE_NOT_FOUND"
    info = await fails(stub.GetCustomer(pb.GetCustomerRequest()), INVALID)
    assert info["fields"] == ["id"]


async def test_validation_names_every_bad_field(stub) -> None:
    bad = Customer(
        valid_for=TimePeriod(),
        characteristic=[Characteristic(name="hobby")],
        contact_medium=[
            ContactMedium(medium=Medium(email_address="a@b.c")),
            ContactMedium(type="Email"),
        ],
    )
    bad.valid_for.start_date_time.FromSeconds(2000)
    bad.valid_for.end_date_time.FromSeconds(1000)
    bad.customer_credit_profile.add(credit_risk_rating=-1, credit_score=-2)
    info = await fails(stub.CreateCustomer(pb.CreateCustomerRequest(customer=bad)), INVALID)
    assert info["reason"] == "INVALID_ARGUMENT"
    assert sorted(info["fields"]) == sorted(
        [
            "customer.name",
            "customer.valid_for.end_date_time",
            "customer.characteristic[0].value",
            "customer.contact_medium[0].type",
            "customer.contact_medium[1].medium",
            "customer.customer_credit_profile[0].credit_risk_rating",
            "customer.customer_credit_profile[0].credit_score",
        ]
    )


async def test_strings_with_nul_or_too_long_are_rejected_not_crashing(stub) -> None:
    info = await fails(create(stub, name="a\x00b"), INVALID)
    assert info["fields"] == ["customer.name"]
    info = await fails(create(stub, name="x" * 5000), INVALID)
    assert info["fields"] == ["customer.name"]
    bad = Customer(name="ok")
    bad.valid_for.start_date_time.seconds = 10**13  # beyond year 9999
    info = await fails(stub.CreateCustomer(pb.CreateCustomerRequest(customer=bad)), INVALID)
    assert info["fields"] == ["customer.valid_for.start_date_time"]


async def test_update_without_mask_patches_populated_fields(stub) -> None:
    created = await create(stub, name="Jane", description="old", status="Active")
    updated = await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=created.id, description="new"))
    )
    assert (updated.name, updated.description, updated.status) == ("Jane", "new", "Active")
    assert updated.etag == "2"
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()
    assert updated.create_time == created.create_time


async def test_update_with_mask_clears_named_fields_and_accepts_json_names(stub) -> None:
    created = await create(stub, name="Jane", description="old", customer_rank=3)
    updated = await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=Customer(id=created.id, name="Janet"),
            update_mask=FieldMask(paths=["name", "customerRank", "description"]),
        )
    )
    assert updated.name == "Janet" and updated.description == ""
    assert not updated.HasField("customer_rank")


async def test_update_with_wildcard_replaces_the_resource(stub) -> None:
    created = await create(stub, name="Jane", description="old", status="Active")
    updated = await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=Customer(id=created.id, name="Other"), update_mask=FieldMask(paths=["*"])
        )
    )
    assert updated.name == "Other" and updated.description == ""
    assert updated.status == "Created"


async def test_update_unknown_mask_path_is_invalid(stub) -> None:
    created = await create(stub, name="Jane")
    info = await fails(
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(
                customer=Customer(id=created.id), update_mask=FieldMask(paths=["name", "shoeSize"])
            )
        ),
        INVALID,
    )
    assert info["fields"] == ["update_mask.paths[1]"]


async def test_update_validates_the_result(stub) -> None:
    created = await create(stub, name="Jane")
    info = await fails(
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(
                customer=Customer(id=created.id), update_mask=FieldMask(paths=["name"])
            )
        ),
        INVALID,
    )
    assert info["fields"] == ["customer.name"]


async def test_update_that_changes_nothing_keeps_the_etag(stub) -> None:
    created = await create(stub, name="Jane")
    same = await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=created.id, name="Jane"))
    )
    assert same.etag == created.etag and same.update_time == created.update_time


async def test_stale_etag_aborts_update_and_delete_current_etag_applies(stub) -> None:
    created = await create(stub, name="Jane")
    await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=created.id, etag=created.etag, name="A"))
    )
    info = await fails(
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=Customer(id=created.id, etag=created.etag, name="B"))
        ),
        grpc.StatusCode.ABORTED,
    )
    assert info["reason"] == "ETAG_MISMATCH" and info["metadata"]["current_etag"] == "2"
    await fails(
        stub.DeleteCustomer(pb.DeleteCustomerRequest(id=created.id, etag="1")),
        grpc.StatusCode.ABORTED,
    )
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=created.id, etag="2"))
    await fails(stub.GetCustomer(pb.GetCustomerRequest(id=created.id)), grpc.StatusCode.NOT_FOUND)
    await fails(
        stub.DeleteCustomer(pb.DeleteCustomerRequest(id=created.id)), grpc.StatusCode.NOT_FOUND
    )


async def test_concurrent_updates_with_one_etag_only_one_wins(stub) -> None:
    created = await create(stub, name="Jane")
    calls = [
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=Customer(id=created.id, etag="1", name=f"n{i}"))
        )
        for i in range(8)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    wins = [r for r in results if isinstance(r, Customer)]
    assert len(wins) == 1
    assert all(r.code() == grpc.StatusCode.ABORTED for r in results if not isinstance(r, Customer))
    final = await stub.GetCustomer(pb.GetCustomerRequest(id=created.id))
    assert final.name == wins[0].name and final.etag == "2"


async def test_request_id_retry_returns_first_result_and_creates_one(stub) -> None:
    request = pb.CreateCustomerRequest(customer=Customer(name="Jane"), request_id="req-1")
    first, *rest = await asyncio.gather(*(stub.CreateCustomer(request) for _ in range(5)))
    assert all(other == first for other in rest)
    listed = await stub.ListCustomers(pb.ListCustomersRequest())
    assert [c.id for c in listed.customers] == [first.id]
    # Later changes do not alter what the retry answers: the first result.
    await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=first.id, name="Changed"))
    )
    assert await stub.CreateCustomer(request) == first


async def test_request_id_reused_for_another_request_fails(stub) -> None:
    await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="A"), request_id="k"))
    info = await fails(
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="B"), request_id="k")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert info["reason"] == "REQUEST_ID_REUSED"
    info = await fails(
        stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=Customer(name="B"), request_id="k" * 129)
        ),
        INVALID,
    )
    assert info["fields"] == ["request_id"]


async def test_request_ids_are_forgotten_after_their_retention(stub, server) -> None:
    from datetime import timedelta

    from customer_management.changes.retention import forget_old_request_ids

    request = pb.CreateCustomerRequest(customer=Customer(name="Jane"), request_id="old")
    first = await stub.CreateCustomer(request)
    assert await forget_old_request_ids(server.database, timedelta(hours=1)) == 0
    assert await stub.CreateCustomer(request) == first
    assert await forget_old_request_ids(server.database, timedelta(0)) == 1
    later = await stub.CreateCustomer(request)  # a new request now: a new customer
    assert later.id != first.id


async def test_email_addresses_are_validated_and_normalised(stub) -> None:
    data = {
        "name": "e",
        "contactMedium": [
            {"type": "email", "medium": {"emailAddress": "Jane.Doe@EXAMPLE.com"}},
            {"type": "email", "medium": {"emailAddress": "not an address"}},
            {"type": "email", "medium": {"emailAddress": "[email\u00a0protected]"}},
        ],
    }
    info = await fails(
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=ParseDict(data, Customer()))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["fields"] == [
        "customer.contact_medium[1].medium.email_address",
        "customer.contact_medium[2].medium.email_address",
    ]
    del data["contactMedium"][1:]
    created = await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=ParseDict(data, Customer()))
    )
    assert created.contact_medium[0].medium.email_address == "Jane.Doe@example.com"


async def test_telephone_numbers_are_stored_in_e164(stub, database_url) -> None:
    data = {
        "name": "p",
        "contactMedium": [
            {"type": "phone", "medium": {"number": "+44 (0)20 7946-0958"}},
            {"type": "phone", "medium": {"number": "020 7946 0958"}},  # whose country?
            {"type": "phone", "medium": {"number": "+1 2"}},
        ],
    }
    info = await fails(
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=ParseDict(data, Customer()))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["fields"] == [
        "customer.contact_medium[1].medium.number",
        "customer.contact_medium[2].medium.number",
    ]
    del data["contactMedium"][2]
    async with own_stub(database_url, phone_region="GB") as british:
        created = await british.CreateCustomer(
            pb.CreateCustomerRequest(customer=ParseDict(data, Customer()))
        )
        numbers = [m.medium.number for m in created.contact_medium]
        assert numbers == ["+442079460958", "+442079460958"]
        found = await british.ListCustomers(
            pb.ListCustomersRequest(filter='contactMedium.medium.number = "(020) 7946-0958"')
        )
        assert [c.id for c in found.customers] == [created.id]
