"""VerifyCustomerAccountPin: match or not, five failures lock, the lock runs out."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from helpers import fails, own_stub
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_account_pb2 import CustomerAccount

FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def account(stub: Any, pin: str = "4711") -> CustomerAccount:
    return await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(name="a", account_type="billing", pin=pin)
        )
    )


def verify(stub: Any, id: str, pin: str) -> Any:
    return stub.VerifyCustomerAccountPin(pb.VerifyCustomerAccountPinRequest(id=id, pin=pin))


async def test_a_pin_matches_or_not_and_responses_say_one_is_set(stub) -> None:
    with_pin, without = await account(stub), await account(stub, pin="")
    assert with_pin.pin_set and not with_pin.pin
    assert not without.pin_set
    assert (await verify(stub, with_pin.id, "4711")).match
    wrong = await verify(stub, with_pin.id, "4712")
    assert not wrong.match and wrong.attempts_left == 4
    right = await verify(stub, with_pin.id, "4711")
    assert right.match and right.attempts_left == 5  # a match clears the count
    info = await fails(verify(stub, without.id, "4711"), FAILED)
    assert info["reason"] == "PIN_NOT_SET"
    await fails(verify(stub, "no-such-account", "4711"), grpc.StatusCode.NOT_FOUND)
    for pin, field in [("", "pin"), ("12ab", "pin"), ("123", "pin")]:
        info = await fails(verify(stub, with_pin.id, pin), grpc.StatusCode.INVALID_ARGUMENT)
        assert info["fields"] == [field]
    info = await fails(verify(stub, "", "4711"), grpc.StatusCode.INVALID_ARGUMENT)
    assert info["fields"] == ["id"]


async def test_pin_set_follows_updates(stub) -> None:
    created = await account(stub, pin="")
    update = pb.UpdateCustomerAccountRequest(
        customer_account=CustomerAccount(id=created.id, pin="123456")
    )
    assert (await stub.UpdateCustomerAccount(update)).pin_set
    assert (await verify(stub, created.id, "123456")).match
    kept = pb.UpdateCustomerAccountRequest(
        customer_account=CustomerAccount(id=created.id, description="kept")
    )
    assert (await stub.UpdateCustomerAccount(kept)).pin_set
    removed = pb.UpdateCustomerAccountRequest(
        customer_account=CustomerAccount(id=created.id), update_mask=FieldMask(paths=["pin"])
    )
    assert not (await stub.UpdateCustomerAccount(removed)).pin_set
    info = await fails(verify(stub, created.id, "123456"), FAILED)
    assert info["reason"] == "PIN_NOT_SET"


async def test_five_failures_lock_the_pin_until_the_period_runs_out(database_url) -> None:
    async with own_stub(database_url, pin_lock_minutes=1.5 / 60) as stub:
        created = await account(stub)
        for left in (4, 3, 2, 1):
            assert (await verify(stub, created.id, "0000")).attempts_left == left
        fifth = await verify(stub, created.id, "0000")
        assert not fifth.match and fifth.attempts_left == 0 and fifth.HasField("locked_until")
        # Locked: even the right PIN is refused, with the unlock time.
        info = await fails(verify(stub, created.id, "4711"), FAILED)
        assert info["reason"] == "PIN_LOCKED"
        assert info["metadata"]["unlock_time"] == fifth.locked_until.ToJsonString()
        await asyncio.sleep(1.6)
        again = await verify(stub, created.id, "4711")
        assert again.match and again.attempts_left == 5


async def test_concurrent_guesses_cannot_outrun_the_lock(database_url) -> None:
    async with own_stub(database_url, pin_lock_minutes=10) as stub:
        created = await account(stub)
        results = await asyncio.gather(
            *(verify(stub, created.id, f"{9000 + i}") for i in range(12)), return_exceptions=True
        )
        checked = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(checked) == 5 and not any(r.match for r in checked)
        assert len(refused) == 7 and all(r.code() == FAILED for r in refused)
        info = await fails(verify(stub, created.id, "4711"), FAILED)
        assert info["reason"] == "PIN_LOCKED"
        # A new PIN starts afresh.
        update = pb.UpdateCustomerAccountRequest(
            customer_account=CustomerAccount(id=created.id, pin="2468")
        )
        await stub.UpdateCustomerAccount(update)
        assert (await verify(stub, created.id, "2468")).match


async def test_the_pepper_rotates_without_losing_pins(database_url) -> None:
    async with own_stub(database_url, pin_pepper="old") as stub:
        created = await account(stub)
    async with own_stub(database_url, pin_pepper="new") as stub:
        # Without the old pepper the PIN cannot verify: the pepper really keys the hash.
        assert not (await verify(stub, created.id, "4711")).match
    async with own_stub(database_url, pin_pepper="new", pin_previous_peppers="old") as stub:
        assert (await verify(stub, created.id, "4711")).match  # and hashed again with "new"
        assert not (await verify(stub, created.id, "4712")).match
    async with own_stub(database_url, pin_pepper="new") as stub:
        assert (await verify(stub, created.id, "4711")).match
