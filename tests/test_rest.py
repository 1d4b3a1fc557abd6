"""The REST gateway through a real HTTP client, on SQLite and PostgreSQL: every operation,
every TMF630 query feature, the representation and the errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from customer_management.config import Config
from customer_management.server import Server
from helpers import seed

BASE = "/tmf-api/customerManagement/v2"
JSON = "application/json"


class Rest:
    """A client of the gateway: each call answers (status, headers, parsed body)."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.root = f"http://127.0.0.1:{port}{BASE}"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = JSON,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = {**({"Content-Type": content_type} if data is not None else {}), **(headers or {})}
        async with self.session.request(method, self.root + path, data=data, headers=sent) as r:
            text = await r.text()
            assert r.headers.get("Content-Type", "").startswith(JSON), (r.status, r.headers)
            return r.status, r.headers, json.loads(text) if text else None

    async def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        status, _, created = await self.call("POST", f"/{collection}", body)
        assert status == 201, created
        return created  # type: ignore[no-any-return]


@pytest_asyncio.fixture
async def rest(server: Server) -> AsyncIterator[Rest]:
    async with aiohttp.ClientSession() as session:
        yield Rest(session, server.http_port)


async def test_create_answers_201_with_location_equal_to_href(rest: Rest) -> None:
    status, headers, created = await rest.call("POST", "/customer", {"name": "Ann"})
    assert status == 201
    assert headers["Location"] == created["href"]
    assert created["href"] == f"https://cm.example/tmf/customer/{created['id']}"
    assert headers["ETag"] == '"1"' and created["etag"] == "1"
    assert created["status"] == "Created"
    status, headers, found = await rest.call("GET", f"/customer/{created['id']}")
    assert (status, found, headers["ETag"]) == (200, created, '"1"')


async def test_the_seed_examples_go_through_rest_once_their_known_faults_are_fixed(
    rest: Rest,
) -> None:
    bank = seed("seed_payment_mean_bank")
    status, _, answer = await rest.call("POST", "/paymentMean", bank)
    assert status == 400  # the sample IBAN fails mod-97
    assert [v["field"] for v in answer["fieldViolations"]] == ["bankAccount.IBAN"]
    bank["bankAccount"]["IBAN"] = "FR1420041010050500013M02606"
    created_bank = await rest.create("paymentMean", bank)

    account = seed("seed_customer_account")
    account["contact"][0]["contactMedium"][0]["medium"]["emailAddress"] = "abc@tmforum.com"
    account["pin"] = "4711"
    account["paymentPlan"][0]["paymentMean"] = {"id": created_bank["id"]}
    status, _, answer = await rest.call("POST", "/customerAccount", account)
    assert status == 422, answer  # ids 1 and 70 do not exist here
    assert answer["code"] == "REFERENCE_NOT_FOUND"

    customer = seed("seed_customer")
    status, _, answer = await rest.call("POST", "/customer", customer)
    assert status == 400
    assert [v["field"] for v in answer["fieldViolations"]] == [
        "validFor.endDateTime",
        "contactMedium[0].medium.emailAddress",
    ]


async def test_every_iso_8601_form_is_accepted_and_rfc_3339_returned(rest: Rest) -> None:
    forms = {
        "2024-05-01T09:30:00Z": "2024-05-01T09:30:00Z",
        "2024-05-01T09:30:00.250Z": "2024-05-01T09:30:00.250Z",
        "2024-05-01T11:30:00+02:00": "2024-05-01T09:30:00Z",
        "2024-05-01T11:30:00+0200": "2024-05-01T09:30:00Z",
        "2024-05-01T09:30:00.123456-00:00": "2024-05-01T09:30:00.123456Z",
        "2024-05-01T09:30": "2024-05-01T09:30:00Z",
        "2024-05-01": "2024-05-01T00:00:00Z",
    }
    for given, returned in forms.items():
        created = await rest.create(
            "customer", {"name": given, "validFor": {"startDateTime": given}}
        )
        assert created["validFor"]["startDateTime"] == returned, given
    status, _, answer = await rest.call(
        "POST", "/customer", {"name": "x", "validFor": {"startDateTime": "1 May 2024"}}
    )
    assert status == 400
    assert answer["fieldViolations"][0]["field"] == "validFor.startDateTime"


async def test_money_is_json_numbers_and_exact(rest: Rest) -> None:
    created = await rest.create(
        "customerAccount",
        {"name": "A", "accountType": "Residential", "creditLimit": 1500.35, "pin": "1234"},
    )
    assert created["creditLimit"] == 1500.35
    assert "pin" not in created and created["pinSet"] is True
    status, _, answer = await rest.call(
        "POST", "/customerAccount", {"name": "A", "accountType": "R", "creditLimit": "lots"}
    )
    assert status == 400 and answer["fieldViolations"][0]["field"] == "creditLimit"


async def test_bad_input_is_400_naming_each_attribute(rest: Rest) -> None:
    status, _, answer = await rest.call(
        "POST",
        "/customer",
        {
            "name": 5,
            "colour": "blue",
            "@type": "Customer",  # TMF's annotations are accepted and ignored
            "contactMedium": [{"type": "email", "medium": {"emailAddress": "not mail"}}],
            "characteristic": {"name": "x"},
        },
    )
    assert status == 400
    assert answer["code"] == "INVALID_ARGUMENT" and answer["status"] == "400"
    assert {v["field"] for v in answer["fieldViolations"]} == {
        "name",
        "colour",
        "characteristic",
    }
    status, _, answer = await rest.call(
        "POST",
        "/customer",
        {"name": "x", "contactMedium": [{"type": "email", "medium": {"emailAddress": "no"}}]},
    )
    assert status == 400
    assert answer["fieldViolations"][0]["field"] == "contactMedium[0].medium.emailAddress"
    for raw, problem in (
        (b"{nope", "is not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"a":' * 100_000, "is not valid JSON"),  # deeper than the JSON parser goes
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nests deeper than 32 levels"),
    ):
        status, _, answer = await rest.call("POST", "/customer", raw=raw)
        assert (status, answer["fieldViolations"][0]["description"]) == (400, problem)
    status, _, answer = await rest.call(
        "POST", "/customer", {"name": "x"}, content_type="text/plain"
    )
    assert (status, answer["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    status, _, answer = await rest.call("POST", "/customer", raw=b" " * (1024 * 1024 + 1))
    assert status == 413


async def test_merge_patch_changes_what_it_names_and_null_removes(rest: Rest) -> None:
    created = await rest.create(
        "customer",
        {
            "name": "Ann",
            "description": "first",
            "validFor": {
                "startDateTime": "2024-01-01T00:00:00Z",
                "endDateTime": "2030-01-01T00:00:00Z",
            },
            "characteristic": [{"name": "colour", "value": "blue"}],
        },
    )
    path = f"/customer/{created['id']}"
    for content_type in ("application/merge-patch+json", JSON):
        status, headers, patched = await rest.call(
            "PATCH",
            path,
            {"validFor": {"endDateTime": "2031-01-01T00:00:00Z"}, "description": None},
            content_type=content_type,
        )
        assert status == 200, patched
        assert patched["validFor"] == {
            "startDateTime": "2024-01-01T00:00:00Z",  # kept: the patch did not name it
            "endDateTime": "2031-01-01T00:00:00Z",
        }
        assert "description" not in patched
        assert patched["characteristic"] == [{"name": "colour", "value": "blue"}]
    assert patched["etag"] == "2" and headers["ETag"] == '"2"'  # the second changed nothing
    for name in ("id", "href"):
        status, _, answer = await rest.call("PATCH", path, {name: "other"})
        assert status == 400 and answer["fieldViolations"][0]["field"] == name
    status, _, same = await rest.call("PATCH", path, {"id": created["id"], "name": "Ann B"})
    assert status == 200 and same["name"] == "Ann B"  # its own id is no change
    status, _, answer = await rest.call("PATCH", path, {"name": "x"}, content_type="text/plain")
    assert status == 415


async def test_if_match_guards_patch_and_delete(rest: Rest) -> None:
    created = await rest.create("customer", {"name": "Ann"})
    path = f"/customer/{created['id']}"
    status, _, _ = await rest.call("PATCH", path, {"name": "B"}, headers={"If-Match": '"1"'})
    assert status == 200
    status, _, answer = await rest.call("PATCH", path, {"name": "C"}, headers={"If-Match": '"1"'})
    assert (status, answer["code"]) == (412, "ETAG_MISMATCH")
    status, _, _ = await rest.call("DELETE", path, headers={"If-Match": 'W/"1"'})
    assert status == 412
    status, _, body = await rest.call("DELETE", path, headers={"If-Match": '"2"'})
    assert (status, body) == (204, None)
    status, _, answer = await rest.call("GET", path)
    assert (status, answer["code"], answer["status"]) == (404, "RESOURCE_NOT_FOUND", "404")
    status, _, _ = await rest.call("DELETE", path)
    assert status == 404


async def test_concurrent_patches_without_if_match_all_land(rest: Rest) -> None:
    """A patch without If-Match merges into whatever version it finds: none is lost.
    The etag is the resource's version, 1 at its create and one more at each write that
    changes it; every patch here sets a description no other sets, so each is a change."""
    patches = 8
    created = await rest.create("customer", {"name": "Ann"})
    assert created["etag"] == "1"
    path = f"/customer/{created['id']}"
    results = await asyncio.gather(
        *(
            rest.call("PATCH", path, {"characteristic": None, "description": f"d{i}"})
            for i in range(patches)
        )
    )
    assert [status for status, _, _ in results] == [200] * patches
    etags = [body["etag"] for _, _, body in results]
    # Each patch wrote a version of its own: versions 2 to 9, each answered once.
    assert sorted(etags, key=int) == [str(v) for v in range(2, 2 + patches)], etags
    assert [headers["ETag"] for _, headers, _ in results] == [f'"{e}"' for e in etags]
    _, headers, final = await rest.call("GET", path)
    assert final["etag"] == str(1 + patches) and headers["ETag"] == f'"{1 + patches}"'
    # The last version holds the description of the patch that wrote it.
    last = next(body for _, _, body in results if body["etag"] == str(1 + patches))
    assert final["description"] == last["description"]


async def test_conflicts_and_references(rest: Rest) -> None:
    customer = await rest.create("customer", {"name": "Ann"})
    account = await rest.create(
        "customerAccount",
        {
            "name": "A",
            "accountType": "Residential",
            "externalReference": "ext-1",
            "customer": {"id": customer["id"]},
        },
    )
    assert account["customer"]["name"] == "Ann"
    status, _, answer = await rest.call(
        "POST", "/customerAccount", {"name": "B", "accountType": "R", "externalReference": "ext-1"}
    )
    assert (status, answer["code"]) == (409, "EXTERNAL_REFERENCE_TAKEN")
    status, _, answer = await rest.call("DELETE", f"/customer/{customer['id']}")
    assert (status, answer["code"]) == (409, "RESOURCE_IN_USE")
    status, _, answer = await rest.call(
        "POST", "/customerAccount", {"name": "B", "accountType": "R", "customer": {"id": "nope"}}
    )
    assert (status, answer["code"]) == (422, "REFERENCE_NOT_FOUND")


async def test_idempotency_key_returns_the_first_result(rest: Rest) -> None:
    key = {"Idempotency-Key": "rest-retry-1"}
    first = await rest.call("POST", "/customer", {"name": "Ann"}, headers=key)
    again = await rest.call("POST", "/customer", {"name": "Ann"}, headers=key)
    assert first[0] == again[0] == 201 and first[2]["id"] == again[2]["id"]
    _, _, listed = await rest.call("GET", "/customer")
    assert len(listed) == 1
    status, _, answer = await rest.call(
        "POST", "/customer", {"name": "Ann"}, headers={"Idempotency-Key": "k" * 129}
    )
    assert (status, answer["fieldViolations"][0]["field"]) == (400, "Idempotency-Key")


async def _people(rest: Rest) -> list[dict[str, Any]]:
    people = [
        {"name": "Ann", "status": "Approved", "customerRank": 1, "mail": "ann@a.org"},
        {"name": "Bob", "status": "Approved", "customerRank": 5, "mail": "bob@b.org"},
        {"name": "Cid", "status": "Validated", "customerRank": 9, "mail": "cid@c.org"},
        {"name": "Dee", "status": "Created", "mail": "dee@d.org"},
    ]
    created = []
    for person in people:
        mail = person.pop("mail")
        person["contactMedium"] = [{"type": "email", "medium": {"emailAddress": mail}}]
        created.append(await rest.create("customer", person))
    return created


async def _names(rest: Rest, query: str) -> list[str]:
    status, headers, listed = await rest.call("GET", f"/customer?{query}")
    assert status == 200, listed
    assert headers["X-Result-Count"] == str(len(listed))
    return [item["name"] for item in listed]


async def test_attribute_filters_with_operators_and_alternatives(rest: Rest) -> None:
    await _people(rest)
    assert await _names(rest, "status=Approved&sort=name") == ["Ann", "Bob"]
    assert await _names(rest, "status=Validated,Created&sort=name") == ["Cid", "Dee"]
    assert await _names(rest, "customerRank.gt=1&sort=name") == ["Bob", "Cid"]
    assert await _names(rest, "customerRank.gte=5&sort=name") == ["Bob", "Cid"]
    assert await _names(rest, "customerRank.lt=5&sort=name") == ["Ann"]
    assert await _names(rest, "customerRank.lte=5&sort=name") == ["Ann", "Bob"]
    assert await _names(rest, "status.ne=Approved&sort=name") == ["Cid", "Dee"]
    assert await _names(rest, "status.ne=Approved,Created") == ["Cid"]
    assert await _names(rest, "status=Approved&customerRank.gt=1") == ["Bob"]
    assert await _names(rest, "contactMedium.medium.emailAddress=CID@c.org") == ["Cid"]
    assert await _names(rest, "name=Ann,Dee&sort=-name") == ["Dee", "Ann"]
    assert await _names(rest, "createTime.gt=2000-01-01T00:00:00%2B0100&sort=name&limit=1") == [
        "Ann"
    ]
    for query, param in (
        ("colour=blue", "colour"),
        ("customerRank.gt=high", "customerRank.gt"),
        ("description.gt=A", "description.gt"),
        ("sort=colour", "sort"),
        ("fields=colour", "fields"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
    ):
        status, _, answer = await rest.call("GET", f"/customer?{query}")
        assert status == 400, query
        assert answer["fieldViolations"][0]["field"] == param, answer


async def test_offset_limit_sort_fields_and_counts(rest: Rest) -> None:
    await _people(rest)
    _, headers, listed = await rest.call("GET", "/customer?sort=-name&offset=1&limit=2")
    assert [p["name"] for p in listed] == ["Cid", "Bob"]
    assert (headers["X-Total-Count"], headers["X-Result-Count"]) == ("4", "2")
    _, headers, listed = await rest.call("GET", "/customer?sort=name&offset=3&limit=2")
    assert [p["name"] for p in listed] == ["Dee"]
    assert (headers["X-Total-Count"], headers["X-Result-Count"]) == ("4", "1")
    assert await _names(rest, "sort=status,-customerRank") == ["Bob", "Ann", "Dee", "Cid"]
    _, _, listed = await rest.call("GET", "/customer?fields=name,customerRank&name=Bob")
    assert listed == [{"id": listed[0]["id"], "name": "Bob", "customerRank": 5}]
    _, _, one = await rest.call("GET", f"/customer/{listed[0]['id']}?fields=status")
    assert one == {"id": listed[0]["id"], "status": "Approved"}


async def test_the_other_collections(rest: Rest) -> None:
    account = await rest.create("customerAccount", {"name": "A", "accountType": "Residential"})
    means = await rest.create(
        "paymentMean",
        {
            "name": "card",
            "type": "creditCard",
            "creditCard": {
                "type": "visa",
                "number": "4111 1111 1111 1111",
                "expirationDate": "2099-12-31T00:00:00Z",
            },
        },
    )
    assert means["creditCard"]["number"] == "************1111"
    for collection, item in (("customerAccount", account), ("paymentMean", means)):
        status, _, listed = await rest.call("GET", f"/{collection}?name={item['name']}")
        assert status == 200 and [x["id"] for x in listed] == [item["id"]]
        status, _, patched = await rest.call(
            "PATCH", f"/{collection}/{item['id']}", {"name": "renamed"}
        )
        assert status == 200 and patched["name"] == "renamed"
    status, _, _ = await rest.call("DELETE", f"/paymentMean/{means['id']}")
    assert status == 204


async def test_credit_categories_over_rest(rest: Rest) -> None:
    gold = await rest.create(
        "creditCategory", {"code": "GOLD", "descriptionI18n": {"fr": "Or", "pt-BR": "Ouro"}}
    )
    assert gold["href"].endswith(f"/creditCategory/{gold['id']}")
    assert gold["descriptionI18n"] == {"fr": "Or", "pt-BR": "Ouro"}
    account = await rest.create(
        "customerAccount",
        {"name": "A", "accountType": "billing", "creditCategory": {"code": "GOLD"}},
    )
    assert account["creditCategory"] == {"code": "GOLD", "id": gold["id"], "href": gold["href"]}
    status, _, listed = await rest.call("GET", "/customerAccount?creditCategory.code=GOLD")
    assert status == 200 and [x["id"] for x in listed] == [account["id"]]
    status, _, patched = await rest.call(
        "PATCH", f"/creditCategory/{gold['id']}", {"description": "Gold", "descriptionI18n": None}
    )
    assert status == 200 and (patched["description"], "descriptionI18n" in patched) == (
        "Gold",
        False,
    )
    for translations, path in (
        ({"de": 1}, "de"),
        ({"english": "x"}, "english"),
        ({"en": "\ud800"}, "en"),  # a lone surrogate: JSON can say it, text cannot hold it
    ):
        status, _, refused = await rest.call(
            "POST", "/creditCategory", {"code": "X", "descriptionI18n": translations}
        )
        assert status == 400
        assert [v["field"] for v in refused["fieldViolations"]] == [f"descriptionI18n.{path}"]
    status, _, in_use = await rest.call("DELETE", f"/creditCategory/{gold['id']}")
    assert (status, in_use["code"]) == (409, "RESOURCE_IN_USE"), in_use


async def test_unknown_paths_and_methods_answer_tmf_errors(rest: Rest) -> None:
    status, _, answer = await rest.call("GET", "/nothing")
    assert (status, answer["status"]) == (404, "404")
    status, headers, answer = await rest.call("PUT", "/customer/x", {"name": "x"})
    assert (status, answer["status"]) == (405, "405")
    assert "PATCH" in headers["Allow"]


async def test_openapi_document_matches_the_routes(rest: Rest, server: Server) -> None:
    status, _, document = await rest.call("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    routes = {
        (route.method, route.resource.canonical.removeprefix(BASE))
        for route in server.gateway.app.router.routes()  # type: ignore[union-attr]
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert documented == routes - {("GET", "/openapi.json")}
    customer = document["components"]["schemas"]["Customer"]["properties"]
    assert (
        "etag" in customer
        and "pin" not in document["components"]["schemas"]["CustomerAccount"]["properties"]
    )
    assert "id" not in document["components"]["schemas"]["Customer_FVO"]["properties"]


@pytest.mark.parametrize("scopes", [["read"], ["write"], ["watch"]])
async def test_bearer_tokens_and_scopes(tmp_path: Path, scopes: list[str]) -> None:
    tokens = tmp_path / "callers.json"
    callers = [
        {"identity": "svc", "scopes": scopes, "token_sha256": hashlib.sha256(b"t0k").hexdigest()}
    ]
    tokens.write_text(json.dumps({"callers": callers}))
    config = Config(
        port=0,
        http_port=0,
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
        tokens_file=str(tokens),
        hub_allowed_hosts="127.0.0.1",
    )
    server = Server(config)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            rest = Rest(session, server.http_port)
            status, headers, answer = await rest.call("GET", "/customer")
            assert (status, headers["WWW-Authenticate"]) == (401, "Bearer")
            status, _, _ = await rest.call("GET", "/openapi.json")
            assert status == 200  # the document is open
            auth = {"Authorization": "Bearer t0k"}
            status, _, _ = await rest.call("GET", "/customer", headers=auth)
            assert status == (200 if "read" in scopes else 403)
            # A path no route takes is answered only to a caller who may read (GET) there.
            status, _, _ = await rest.call("GET", "/nowhere")
            assert status == 401
            status, _, _ = await rest.call("GET", "/nowhere", headers=auth)
            assert status == (404 if "read" in scopes else 403)
            status, _, created = await rest.call("POST", "/customer", {"name": "A"}, headers=auth)
            assert status == (201 if "write" in scopes else 403)
            if status == 201:
                assert created["createdBy"] == "svc"
            status, _, answer = await rest.call(
                "POST", "/hub", {"callback": "http://127.0.0.1:1/x"}, headers=auth
            )
            assert status == (201 if "watch" in scopes else 403)
            if status == 403:
                assert answer["code"] == "MISSING_SCOPE"
    finally:
        await server.stop(grace=1)


def test_merge_patch_follows_rfc_7386() -> None:
    from customer_management.rest.gateway import merge_patch

    # The examples of RFC 7386, appendix A.
    cases = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for target, patch, result in cases:
        assert merge_patch(target, patch) == result
