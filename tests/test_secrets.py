"""Secrets stay secret: after a workload full of PINs and card numbers, neither the
database (its files on SQLite, every row on PostgreSQL, the event history included),
nor the server's log, nor any response holds one in clear."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from customer_management.config import Config
from customer_management.domain.payment_details import card_fingerprint
from customer_management.server import Server
from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.payment_mean_pb2 import CreditCard, PaymentMean

PINS = ["90817263", "112358132134", "55501234"]
CARDS = ["4111111111111111", "5555555555554444", "378282246310005"]
WRITTEN = ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005"]
BAD_CARD = "4111111111111112"  # fails the Luhn check: refused, and never echoed
CVC = "7391"
SMUGGLED = b"cvc=7391;sent-in-an-unknown-field"
"""Four digits turn up by chance in a database dump, so the scan looks for this instead."""
CARD_KEY = "card-key-for-tests"


def expiry() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=400))
    return stamp


@contextlib.contextmanager
def captured_log() -> Iterator[list[str]]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s %(exc_text)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@contextlib.asynccontextmanager
async def own_stub(database_url: str) -> AsyncIterator[Any]:
    config = Config(
        port=0, database_url=database_url, pin_pepper="pepper", card_key=CARD_KEY, log_level="DEBUG"
    )
    server = Server(config)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield service_pb2_grpc.CustomerManagementServiceStub(channel)
    finally:
        await server.stop(grace=1)


async def workload(stub: Any) -> list[bytes]:
    """Every call a secret goes through; returns the serialized responses."""
    replies: list[bytes] = []
    means = []
    for written in WRITTEN:
        card = CreditCard(type="Visa", number=written, expiration_date=expiry())
        mean = await stub.CreatePaymentMean(
            pb.CreatePaymentMeanRequest(
                payment_mean=PaymentMean(name="card", type="CreditCard", credit_card=card)
            )
        )
        means.append(mean)
        replies.append(mean.SerializeToString())
    bad = CreditCard(number=BAD_CARD, expiration_date=expiry())
    await fails(
        stub.CreatePaymentMean(
            pb.CreatePaymentMeanRequest(
                payment_mean=PaymentMean(name="x", type="CreditCard", credit_card=bad)
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # A CVC: as a characteristic, or in a card field this version does not know (unknown
    # field 15 of CreditCard), it is refused; in an unknown field elsewhere, dropped.
    await fails(
        stub.CreateCustomer(
            pb.CreateCustomerRequest(
                customer=Customer(name="c", characteristic=[{"name": "CVV", "value": CVC}])
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    card = CreditCard(number=CARDS[0], expiration_date=expiry())
    raw = card.SerializeToString() + b"\x7a" + bytes([len(SMUGGLED)]) + SMUGGLED
    sneaky = PaymentMean(name="sneaky", type="CreditCard")
    sneaky.credit_card.MergeFromString(raw)
    info = await fails(
        stub.CreatePaymentMean(pb.CreatePaymentMeanRequest(payment_mean=sneaky)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["fields"] == ["payment_mean.credit_card"]
    elsewhere = Customer(name="sneaky")  # outside a card, an unknown field is only dropped
    elsewhere.MergeFromString(b"\x9a\x06" + bytes([len(SMUGGLED)]) + SMUGGLED)  # field 99
    created = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=elsewhere))
    replies.append(created.SerializeToString())
    for i, pin in enumerate(PINS):
        account = await stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(
                customer_account=CustomerAccount(name=f"a{i}", account_type="x", pin=pin),
                request_id=f"secret-{i}",
            )
        )
        replies.append(account.SerializeToString())
        new_pin = pin[::-1]
        updated = await stub.UpdateCustomerAccount(
            pb.UpdateCustomerAccountRequest(
                customer_account=CustomerAccount(id=account.id, pin=new_pin)
            )
        )
        replies.append(updated.SerializeToString())
        for guess in (pin, new_pin):
            verdict = await stub.VerifyCustomerAccountPin(
                pb.VerifyCustomerAccountPinRequest(id=account.id, pin=guess)
            )
            replies.append(verdict.SerializeToString())
    listed = await stub.ListPaymentMeans(pb.ListPaymentMeansRequest())
    replies.append(listed.SerializeToString())
    return replies


def secrets() -> list[bytes]:
    found = [s.encode() for s in [*PINS, *(p[::-1] for p in PINS), *CARDS, *WRITTEN, BAD_CARD]]
    return [*found, SMUGGLED]


def stored_bytes(database_url: str, tmp: Path) -> bytes:
    if database_url.startswith("sqlite"):
        path = Path(database_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    dump = bytearray()
    with psycopg.connect(url) as connection:
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    dump += value if isinstance(value, bytes) else str(value).encode()
                    dump += b"\n"
    return bytes(dump)


async def test_no_pin_or_card_number_in_clear_anywhere(tmp_path: Path, database_url: str) -> None:
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'secrets.db'}"
    with captured_log() as log:
        async with own_stub(database_url) as stub:
            replies = await workload(stub)
    assert len(log) > 0  # the server did log (debug included)
    stored = stored_bytes(database_url, tmp_path)
    assert b"************1111" in stored  # the scan reads the real data
    everything = {
        "database": stored,
        "log": "\n".join(log).encode(),
        "responses": b"".join(replies),
    }
    for where, data in everything.items():
        for secret in secrets():
            assert secret not in data, f"{secret!r} found in the {where}"


async def test_cards_keep_brand_last_four_and_a_keyed_fingerprint(database_url, tmp_path) -> None:
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'cards.db'}"
    async with own_stub(database_url) as stub:
        made = []
        for written in [WRITTEN[0], CARDS[0], CARDS[1]]:
            card = CreditCard(type="Visa", number=written, expiration_date=expiry())
            made.append(
                await stub.CreatePaymentMean(
                    pb.CreatePaymentMeanRequest(
                        payment_mean=PaymentMean(name="c", type="CreditCard", credit_card=card)
                    )
                )
            )
        same, again, other = (m.credit_card for m in made)
        assert same.number == "************1111" and same.type == "Visa"
        assert (
            same.fingerprint == again.fingerprint == card_fingerprint(CARDS[0], CARD_KEY.encode())
        )
        assert other.fingerprint != same.fingerprint and other.number.endswith("4444")
        # The fingerprint is the server's: one sent with the stored card is ignored.
        sent = PaymentMean()
        sent.CopyFrom(made[0])
        sent.credit_card.fingerprint = "forged"
        sent.name = "renamed"
        updated = await stub.UpdatePaymentMean(pb.UpdatePaymentMeanRequest(payment_mean=sent))
        assert updated.credit_card.fingerprint == same.fingerprint
