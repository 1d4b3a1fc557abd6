"""PaymentMean: the detail its type calls for, IBAN/BIC checks, masked card numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.payment_mean_pb2 import BankAccount, CreditCard, PaymentMean

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CARD = "4111 1111 1111 1111"


def card(number: str = CARD, days: int = 365) -> CreditCard:
    result = CreditCard(credit_card_holder="G. Flaubert", type="Visa", number=number)
    result.expiration_date.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return result


async def create(stub, **fields) -> PaymentMean:
    return await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(payment_mean=PaymentMean(**fields))
    )


async def test_type_calls_for_its_detail(stub) -> None:
    info = await fails(create(stub, name="x", type="BankAccountDebit"), INVALID)
    assert info["fields"] == ["payment_mean.bank_account"]
    info = await fails(create(stub, name="x", type="CreditCard"), INVALID)
    assert info["fields"] == ["payment_mean.credit_card"]
    info = await fails(
        create(
            stub,
            name="x",
            type="CreditCard",
            credit_card=card(),
            bank_account=BankAccount(iban="DE89370400440532013000"),
        ),
        INVALID,
    )
    assert info["fields"] == ["payment_mean.bank_account"]
    info = await fails(create(stub), INVALID)
    assert info["fields"] == ["payment_mean.name", "payment_mean.type"]


async def test_iban_and_bic_are_checked_and_normalised(stub) -> None:
    created = await create(
        stub,
        name="x",
        type="BankAccountDebit",
        bank_account=BankAccount(iban="de89 3704 0044 0532 0130 00", bic="cobadeffxxx"),
    )
    assert created.bank_account.iban == "DE89370400440532013000"
    assert created.bank_account.bic == "COBADEFFXXX"
    info = await fails(
        create(
            stub,
            name="x",
            type="BankAccountDebit",
            bank_account=BankAccount(iban="DE89370400440532013001", bic="COBADE"),
        ),
        INVALID,
    )
    assert info["fields"] == ["payment_mean.bank_account.iban", "payment_mean.bank_account.bic"]


async def test_card_number_is_kept_only_masked(stub, sql) -> None:
    created = await create(stub, name="card", type="CreditCard", credit_card=card())
    assert created.credit_card.number == "************1111"
    got = await stub.GetPaymentMean(pb.GetPaymentMeanRequest(id=created.id))
    assert got.credit_card.number == "************1111"
    for (body,) in sql("SELECT body FROM payment_mean"):
        assert b"4111111111111111" not in bytes(body) and b"4111 1111" not in bytes(body)
    # Sending back what was read keeps the card.
    renamed = await stub.UpdatePaymentMean(
        pb.UpdatePaymentMeanRequest(payment_mean=got, update_mask=FieldMask(paths=["*"]))
    )
    assert renamed.credit_card.number == "************1111"
    # A new full number replaces it.
    changed = await stub.UpdatePaymentMean(
        pb.UpdatePaymentMeanRequest(
            payment_mean=PaymentMean(id=created.id, credit_card=card("5555555555554444"))
        )
    )
    assert changed.credit_card.number == "************4444"


async def test_bad_cards_are_rejected(stub) -> None:
    for number in ("4111111111111112", "xxxxx1234", "41111111111", "4" * 20):
        info = await fails(
            create(stub, name="c", type="CreditCard", credit_card=card(number)), INVALID
        )
        assert info["fields"] == ["payment_mean.credit_card.number"], number
    info = await fails(
        create(stub, name="c", type="CreditCard", credit_card=card(days=-1)), INVALID
    )
    assert info["fields"] == ["payment_mean.credit_card.expiration_date"]


async def test_a_card_that_expired_since_does_not_block_other_changes(stub, server) -> None:
    from sqlalchemy import update

    from customer_management.store.models import PaymentMeanRow

    created = await create(stub, name="card", type="CreditCard", credit_card=card())
    expired = PaymentMean()
    expired.CopyFrom(created)
    expired.credit_card.expiration_date.FromSeconds(1_000_000_000)
    with server.database.write_engine.begin() as connection:  # time passes…
        body = PaymentMean.FromString(expired.SerializeToString())
        for name in ("id", "href", "etag", "create_time", "update_time"):
            body.ClearField(name)
        connection.execute(
            update(PaymentMeanRow)
            .where(PaymentMeanRow.id == created.id)
            .values(body=body.SerializeToString())
        )
    got = await stub.GetPaymentMean(pb.GetPaymentMeanRequest(id=created.id))
    renamed = await stub.UpdatePaymentMean(
        pb.UpdatePaymentMeanRequest(payment_mean=PaymentMean(id=got.id, name="old card"))
    )
    assert renamed.name == "old card"
    info = await fails(
        stub.UpdatePaymentMean(
            pb.UpdatePaymentMeanRequest(
                payment_mean=PaymentMean(id=got.id, credit_card=card(days=-3))
            )
        ),
        INVALID,
    )
    assert "payment_mean.credit_card.expiration_date" in info["fields"]
