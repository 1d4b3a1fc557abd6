"""The field-level history (ListChanges): every create, update and delete of every kind,
with its time, caller and each field's value before and after; secrets never shown."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text
from test_all_resources import card

from customer_management.changes.retention import forget_old_events, forget_old_history
from customer_management.config import Config
from customer_management.edge.methods import METHODS
from customer_management.server import Server
from customer_management.store import outbox
from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.common_pb2 import ContactMedium, Medium
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.history_pb2 import ChangeKind, ListChangesRequest, ResourceType
from tmf629.v1.payment_mean_pb2 import PaymentMean

INVALID = grpc.StatusCode.INVALID_ARGUMENT
ABSENT = "∅"


def field_changes(change: Any) -> list[tuple[str, Any, Any]]:
    """(path, before, after) of each field change; ABSENT where a side has no value,
    "redacted" on both sides of a secret."""
    out = []
    for field in change.field_changes:
        if field.redacted:
            assert not field.HasField("before") and not field.HasField("after")
            out.append((field.path, "redacted", "redacted"))
            continue
        before = json_format.MessageToDict(field.before) if field.HasField("before") else ABSENT
        after = json_format.MessageToDict(field.after) if field.HasField("after") else ABSENT
        out.append((field.path, before, after))
    return out


async def history(stub: Any, kind: str, id: str, **fields: Any) -> list[Any]:
    response = await stub.ListChanges(
        ListChangesRequest(
            resource_type=ResourceType.Value(f"RESOURCE_TYPE_{kind}"), resource_id=id, **fields
        )
    )
    return list(response.changes)


def head(change: Any) -> tuple[str, str, str, str]:
    return (
        ChangeKind.Name(change.change_kind).removeprefix("CHANGE_KIND_"),
        change.caller,
        change.resource_id,
        change.etag,
    )


async def test_every_kind_reads_back_its_exact_history(stub) -> None:
    # Customer: created with a contact medium, renamed and its address changed, deleted.
    medium = ContactMedium(type="email", medium=Medium(email_address="jane@example.com"))
    c = await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=Customer(name="Jane", contact_medium=[medium]))
    )
    medium.medium.email_address = "janet@example.com"
    await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=c.id, name="Janet", contact_medium=[medium]))
    )
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=c.id))
    changes = await history(stub, "CUSTOMER", c.id)
    assert [head(x) for x in changes] == [
        ("DELETE", "anonymous", c.id, "2"),
        ("UPDATE", "anonymous", c.id, "2"),
        ("CREATE", "anonymous", c.id, "1"),
    ]
    assert [field_changes(x) for x in changes] == [
        [
            ("name", "Janet", ABSENT),
            ("status", "Created", ABSENT),
            (
                "contactMedium",
                [{"type": "email", "medium": {"emailAddress": "janet@example.com"}}],
                ABSENT,
            ),
        ],
        [
            ("name", "Jane", "Janet"),
            ("contactMedium[0].medium.emailAddress", "jane@example.com", "janet@example.com"),
        ],
        [
            ("name", ABSENT, "Jane"),
            ("status", ABSENT, "Created"),
            (
                "contactMedium",
                ABSENT,
                [{"type": "email", "medium": {"emailAddress": "jane@example.com"}}],
            ),
        ],
    ]
    assert changes[0].change_time.ToDatetime() >= changes[1].change_time.ToDatetime()
    assert [x.change_id for x in changes] == sorted((x.change_id for x in changes), key=int)[::-1]

    # CreditCategory: its translations are a map, each language its own path.
    cc = await stub.CreateCreditCategory(
        pb.CreateCreditCategoryRequest(
            credit_category=CreditCategory(code="GOLD", description_i18n={"fr": "Or"})
        )
    )
    await stub.UpdateCreditCategory(
        pb.UpdateCreditCategoryRequest(
            credit_category=CreditCategory(
                id=cc.id, code="GOLD", description_i18n={"de": "Gold", "fr": "Dorée"}
            ),
            update_mask=FieldMask(paths=["description_i18n"]),
        )
    )
    changes = await history(stub, "CREDIT_CATEGORY", cc.id)
    assert [field_changes(x) for x in changes] == [
        [("descriptionI18n.de", ABSENT, "Gold"), ("descriptionI18n.fr", "Or", "Dorée")],
        [("code", ABSENT, "GOLD"), ("descriptionI18n", ABSENT, {"fr": "Or"})],
    ]
    # (deleted below, once the account that names it is gone)

    # CustomerAccount: its PIN shows as changed, never with a value; references by code.
    account = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(
                name="A", account_type="billing", pin="1234", credit_category={"code": "GOLD"}
            )
        )
    )
    await stub.UpdateCustomerAccount(
        pb.UpdateCustomerAccountRequest(
            customer_account=CustomerAccount(id=account.id, pin="5678", credit_limit=100.5)
        )
    )
    await stub.DeleteCustomerAccount(pb.DeleteCustomerAccountRequest(id=account.id))
    await stub.DeleteCreditCategory(pb.DeleteCreditCategoryRequest(id=cc.id))
    newest = (await history(stub, "CREDIT_CATEGORY", cc.id))[0]
    assert field_changes(newest) == [
        ("code", "GOLD", ABSENT),
        ("descriptionI18n", {"de": "Gold", "fr": "Dorée"}, ABSENT),
    ]
    gold = {
        "code": "GOLD",
        "id": cc.id,
        "href": f"https://cm.example/tmf/creditCategory/{cc.id}",
    }
    changes = await history(stub, "CUSTOMER_ACCOUNT", account.id)
    assert [head(x)[0] for x in changes] == ["DELETE", "UPDATE", "CREATE"]
    assert [field_changes(x) for x in changes] == [
        [
            ("name", "A", ABSENT),
            ("accountType", "billing", ABSENT),
            ("status", "Created", ABSENT),
            ("creditLimit", 100.5, ABSENT),
            ("pinSet", True, ABSENT),
            ("creditCategory", gold, ABSENT),
        ],
        [("creditLimit", ABSENT, 100.5), ("pin", "redacted", "redacted")],
        [
            ("name", ABSENT, "A"),
            ("accountType", ABSENT, "billing"),
            ("status", ABSENT, "Created"),
            ("pinSet", ABSENT, True),
            ("creditCategory", ABSENT, gold),
            ("pin", "redacted", "redacted"),
        ],
    ]

    # PaymentMean: the card number only as it is stored, masked.
    mean = await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(
            payment_mean=PaymentMean(name="card", type="CreditCard", credit_card=card())
        )
    )
    await stub.UpdatePaymentMean(
        pb.UpdatePaymentMeanRequest(payment_mean=PaymentMean(id=mean.id, name="my card"))
    )
    await stub.DeletePaymentMean(pb.DeletePaymentMeanRequest(id=mean.id))
    changes = await history(stub, "PAYMENT_MEAN", mean.id)
    assert [head(x)[0] for x in changes] == ["DELETE", "UPDATE", "CREATE"]
    assert field_changes(changes[1]) == [("name", "card", "my card")]
    last = dict((path, before) for path, before, _ in field_changes(changes[0]))
    assert last["name"] == "my card" and set(last) == {"name", "type", "creditCard"}
    created = dict((path, after) for path, _, after in field_changes(changes[2]))
    assert created["creditCard"]["number"] == json_format.MessageToDict(mean.credit_card)["number"]
    assert "4111111111111111" not in str(changes)


async def test_secrets_never_reach_the_history_table(stub, server) -> None:
    account = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(name="A", account_type="b", pin="902107314588")
        )
    )
    await stub.UpdateCustomerAccount(
        pb.UpdateCustomerAccountRequest(
            customer_account=CustomerAccount(id=account.id, pin="313370945216")
        )
    )
    await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(
            payment_mean=PaymentMean(name="card", type="CreditCard", credit_card=card())
        )
    )

    def rows(session: Any) -> list[Any]:
        return list(session.execute(text("SELECT before, after, secrets FROM resource_change")))

    stored = await server.database.read(rows)
    assert len(stored) == 3
    everything = b"".join(
        (before or b"") + (after or b"") + secrets.encode() for before, after, secrets in stored
    )
    # Twelve-digit PINs: they cannot turn up by chance in an id or a timestamp.
    for secret in (b"902107314588", b"313370945216", b"4111111111111111"):
        assert secret not in everything
    answer = await stub.ListChanges(
        ListChangesRequest(
            resource_type=ResourceType.RESOURCE_TYPE_CUSTOMER_ACCOUNT, resource_id=account.id
        )
    )
    shown = answer.SerializeToString()
    assert b"902107314588" not in shown and b"313370945216" not in shown


async def test_history_outlives_the_events_and_has_its_own_retention(own_database) -> None:
    server = Server(Config(port=0, database_url=own_database))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            c = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="a")))
            await stub.UpdateCustomer(
                pb.UpdateCustomerRequest(customer=Customer(id=c.id, name="b"))
            )
            assert await forget_old_events(server.database, timedelta(0)) >= 2
            assert await server.database.read(outbox.count) == 0
            assert [head(x)[0] for x in await history(stub, "CUSTOMER", c.id)] == [
                "UPDATE",
                "CREATE",
            ]
            # Kept for ever unless told otherwise; then only what is older goes.
            assert Config().history_retention_hours == 0
            assert await forget_old_history(server.database, timedelta(hours=1)) == 0
            assert len(await history(stub, "CUSTOMER", c.id)) == 2
            assert await forget_old_history(server.database, timedelta(0)) == 2
            assert await history(stub, "CUSTOMER", c.id) == []
    finally:
        await server.stop(grace=1)


async def test_history_filters_by_time_and_by_field(stub) -> None:
    c = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="v0")))
    times = []
    for i in range(1, 4):
        await asyncio.sleep(0.05)
        times.append(datetime.now(UTC))
        await asyncio.sleep(0.05)
        await stub.UpdateCustomer(
            pb.UpdateCustomerRequest(
                customer=Customer(id=c.id, name=f"v{i}", description=f"d{i}" if i == 2 else ""),
                update_mask=FieldMask(paths=["name", "description"]),
            )
        )

    def stamp(moment: datetime) -> Any:
        from google.protobuf.timestamp_pb2 import Timestamp

        value = Timestamp()
        value.FromDatetime(moment)
        return value

    between = await history(
        stub, "CUSTOMER", c.id, start_time=stamp(times[0]), end_time=stamp(times[2])
    )
    assert [field_changes(x)[0][2] for x in between] == ["v2", "v1"]
    since = await history(stub, "CUSTOMER", c.id, start_time=stamp(times[2]))
    assert [field_changes(x)[0][2] for x in since] == ["v3"]
    described = await history(stub, "CUSTOMER", c.id, field_paths=["description"])
    assert [field_changes(x) for x in described] == [
        [("description", "d2", ABSENT)],
        [("description", ABSENT, "d2")],
    ]
    # A create sets a list whole: asking for a field inside it finds the create.
    medium = ContactMedium(type="email", medium=Medium(email_address="a@example.com"))
    d = await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=Customer(name="d", contact_medium=[medium]))
    )
    inside = await history(stub, "CUSTOMER", d.id, field_paths=["contact_medium[0].medium"])
    assert [field_changes(x)[0][0] for x in inside] == ["contactMedium"]


async def test_history_pages_newest_first(stub) -> None:
    c = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="n0")))
    for i in range(1, 5):
        await stub.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=Customer(id=c.id, name=f"n{i}"))
        )
    seen, token = [], ""
    for _ in range(3):
        response = await stub.ListChanges(
            ListChangesRequest(
                resource_type=ResourceType.RESOURCE_TYPE_CUSTOMER,
                resource_id=c.id,
                page_size=2,
                page_token=token,
            )
        )
        seen.append([x.etag for x in response.changes])
        token = response.next_page_token
    assert seen == [["5", "4"], ["3", "2"], ["1"]] and token == ""
    first = await stub.ListChanges(
        ListChangesRequest(
            resource_type=ResourceType.RESOURCE_TYPE_CUSTOMER, resource_id=c.id, page_size=1
        )
    )
    info = await fails(
        stub.ListChanges(
            ListChangesRequest(
                resource_type=ResourceType.RESOURCE_TYPE_CUSTOMER,
                resource_id=c.id,
                page_token=first.next_page_token,
                field_paths=["name"],
            )
        ),
        INVALID,
    )
    assert info["fields"] == ["page_token"]


async def test_bad_history_requests_name_the_field(stub) -> None:
    customer = ResourceType.RESOURCE_TYPE_CUSTOMER
    cases = {
        "resource_type": ListChangesRequest(resource_id="x"),
        "resource_id": ListChangesRequest(resource_type=customer),
        "field_paths": ListChangesRequest(
            resource_type=customer, resource_id="x", field_paths=["nosuchField"]
        ),
        "page_token": ListChangesRequest(resource_type=customer, resource_id="x", page_token="?"),
        "page_size": ListChangesRequest(resource_type=customer, resource_id="x", page_size=-1),
    }
    late = ListChangesRequest(resource_type=customer, resource_id="x")
    late.start_time.FromDatetime(datetime(2026, 2, 1, tzinfo=UTC))
    late.end_time.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    cases["end_time"] = late
    for field, request in cases.items():
        info = await fails(stub.ListChanges(request), INVALID)
        assert info["fields"] == [field], field
    # Tokens made by hand: deeply nested, too long, a position out of range with the
    # right binding (which anyone can compute), and too many paths.
    c = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="t")))
    await stub.UpdateCustomer(pb.UpdateCustomerRequest(customer=Customer(id=c.id, name="u")))
    first = await stub.ListChanges(
        ListChangesRequest(resource_type=customer, resource_id=c.id, page_size=1)
    )
    _, binding = json.loads(base64.urlsafe_b64decode(first.next_page_token))
    forged = [
        base64.urlsafe_b64encode(b"[" * 150).decode(),
        "A" * 5000,
        *(
            base64.urlsafe_b64encode(json.dumps([below, binding]).encode()).decode()
            for below in (2**70, -1, True, "1")
        ),
    ]
    for token in forged:
        request = ListChangesRequest(resource_type=customer, resource_id=c.id, page_token=token)
        info = await fails(stub.ListChanges(request), INVALID)
        assert info["fields"] == ["page_token"], token
    many = ListChangesRequest(resource_type=customer, resource_id=c.id, field_paths=["name"] * 101)
    assert (await fails(stub.ListChanges(many), INVALID))["fields"] == ["field_paths"]
    # A resource never seen has no history: an empty answer, not an error.
    assert await history(stub, "CUSTOMER", "never-was") == []


def test_the_history_is_read_only() -> None:
    """No method writes it: the one method about changes is a read."""
    about_changes = [name for name in METHODS if "Change" in name]
    assert about_changes == ["ListChanges"]
    assert (METHODS["ListChanges"].scope, METHODS["ListChanges"].mutates) == ("read", False)
