"""The seed's JSON examples parse as our messages; created as they stand, each rule they
break is rejected; with exactly those values fixed, they are created."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import json_format

from helpers import fails, parse, seed
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.payment_mean_pb2 import PaymentMean

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION
FUTURE = (datetime.now(UTC) + timedelta(days=800)).strftime("%Y-%m-%dT00:00:00Z")


@pytest.mark.parametrize(
    ("name", "message_type"),
    [
        ("seed_customer", Customer),
        ("seed_customer_account", CustomerAccount),
        ("seed_payment_mean_bank", PaymentMean),
        ("seed_payment_mean_card", PaymentMean),
    ],
)
def test_seed_json_parses_without_renaming(name: str, message_type: type) -> None:
    data = seed(name)
    message = parse(message_type, data)
    # Every key of the example is a field: printing back gives the same keys.
    printed = json_format.MessageToDict(message)
    assert set(printed) == set(data) - {key for key, value in data.items() if value in ("", [])}


async def create_payment_means(stub) -> tuple[PaymentMean, PaymentMean]:
    bank = seed("seed_payment_mean_bank")
    info = await fails(
        stub.CreatePaymentMean(pb.CreatePaymentMeanRequest(payment_mean=parse(PaymentMean, bank))),
        INVALID,
    )
    assert info["fields"] == ["payment_mean.bank_account.iban"]  # the sample IBAN fails mod-97
    bank["bankAccount"]["IBAN"] = "FR1420041010050500013M02606"
    created_bank = await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(payment_mean=parse(PaymentMean, bank))
    )
    assert created_bank.bank_account.bic == "PSSTFRPPPAR"

    card = seed("seed_payment_mean_card")
    info = await fails(
        stub.CreatePaymentMean(pb.CreatePaymentMeanRequest(payment_mean=parse(PaymentMean, card))),
        INVALID,
    )  # already masked, and expired
    assert info["fields"] == [
        "payment_mean.credit_card.number",
        "payment_mean.credit_card.expiration_date",
    ]
    card["creditCard"].update(number="4111111111111111", expirationDate=FUTURE)
    created_card = await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(payment_mean=parse(PaymentMean, card))
    )
    assert created_card.credit_card.number == "************1111"
    return created_bank, created_card


async def test_seed_resources_are_created_once_their_known_faults_are_fixed(stub) -> None:
    bank, card = await create_payment_means(stub)

    account = seed("seed_customer_account")
    info = await fails(
        stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(customer_account=parse(CustomerAccount, account))
        ),
        INVALID,
    )
    # "pin0" is not a multi-digit PIN, the first plan names no payment mean, and the
    # contact's email is the web page's "[email protected]" stand-in, not an address.
    assert info["fields"] == [
        "customer_account.pin",
        "customer_account.contact[0].contact_medium[0].medium.email_address",
        "customer_account.payment_plan[0].payment_mean",
    ]
    account["contact"][0]["contactMedium"][0]["medium"]["emailAddress"] = "abc@tmforum.com"
    account["pin"] = "4711"
    account["paymentPlan"][0]["paymentMean"] = {"id": bank.id}
    info = await fails(
        stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(customer_account=parse(CustomerAccount, account))
        ),
        FAILED,
    )  # ids 1 and 70 do not exist here
    assert sorted(info["subjects"]) == ["customer/1", "customer_account/1", "payment_mean/70"]

    customer = seed("seed_customer")
    info = await fails(
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=parse(Customer, customer))), INVALID
    )
    assert info["fields"] == [
        "customer.valid_for.end_date_time",  # ends before it starts
        "customer.contact_medium[0].medium.email_address",  # "[email protected]"
    ]
    customer["validFor"]["endDateTime"] = "2014-06-19T04:00:00.0Z"
    customer["contactMedium"][0]["medium"]["emailAddress"] = "abc@tmforum.com"
    info = await fails(
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=parse(Customer, customer))), FAILED
    )  # accounts 1 and 2, payment means 45 and 64 do not exist here
    assert sorted(info["subjects"]) == [
        "customer_account/1",
        "customer_account/2",
        "payment_mean/45",
        "payment_mean/64",
    ]
    siblings = [
        await stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(
                customer_account=CustomerAccount(
                    name=f"CustomerAccount{i}", account_type="Residential"
                )
            )
        )
        for i in (1, 2)
    ]
    for ref, target in zip(customer["customerAccount"], siblings, strict=True):
        ref["id"] = target.id  # its other fields are output-only: ignored, then filled in
    customer["paymentMean"][0]["id"], customer["paymentMean"][1]["id"] = bank.id, card.id
    created_customer = await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=parse(Customer, customer))
    )
    assert created_customer.customer_rank == 3  # "3" in the seed: a JSON string parses as int
    assert [ref.name for ref in created_customer.payment_mean] == [
        "My favourite payment mean",
        "My credit card payment mean",
    ]
    assert [(ref.name, ref.description) for ref in created_customer.customer_account] == [
        ("CustomerAccount1", ""),
        ("CustomerAccount2", ""),
    ]
    sibling = siblings[0]
    account["customer"] = {"id": created_customer.id}
    account["customerAccountRelationship"][0]["customerAccount"][0]["id"] = sibling.id
    account["paymentPlan"][1]["paymentMean"]["id"] = card.id
    created = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(customer_account=parse(CustomerAccount, account))
    )
    assert created.customer.name == "DisplayName"
    assert created.credit_limit == 1212121 and created.receivable_balance == 52.3
    assert created.pin == ""
    printed = json_format.MessageToDict(created)
    assert printed["paymentPlan"][1]["amount"] == 20
    assert printed["lastModified"].endswith("Z")
