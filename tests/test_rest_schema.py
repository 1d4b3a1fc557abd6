"""Schemathesis probes every operation of the gateway's own OpenAPI document with
generated input, valid and invalid by the document: no answer is a server error, and
every answer matches the document."""

from __future__ import annotations

import asyncio
import os

import hypothesis
import schemathesis
from schemathesis import checks

from customer_management.server import Server

BASE = "/tmf-api/customerManagement/v2"
EXAMPLES = int(os.environ.get("CM_SCHEMATHESIS_EXAMPLES", "25"))
"""Generated requests per operation; raise it for a longer hunt."""
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
NOTHING_INVALID = {
    "DELETE /customer/{id}",
    "DELETE /customerAccount/{id}",
    "DELETE /paymentMean/{id}",
    "DELETE /creditCategory/{id}",
    "GET /hub/{id}",
    "DELETE /hub/{id}",
}
"""The operations whose every input is a string the document leaves free (the id in the
path, an If-Match header) and that take no body: no request is invalid by the document,
so negative generation is Unsatisfiable for them, and for them alone."""


def probe(root: str) -> list[str]:
    """Runs every operation's generated cases; the failures, one line each."""
    schema = schemathesis.openapi.from_url(f"{root}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 23  # 5 per collection, 3 of the hub

    cases = [
        (operation, mode)
        for operation in operations
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    ]
    sent: dict[tuple[str, str], int] = {}
    for operation, mode in cases:
        key = (operation.label, mode.value)
        sent[key] = 0

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=root)
            sent[key] += 1  # noqa: B023 (run is called in this iteration)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            if not (
                mode is schemathesis.GenerationMode.NEGATIVE and operation.label in NOTHING_INVALID
            ):
                failures.append(f"{operation.label} ({mode.value}): no request could be made")
        # A check's failures come as a FailureGroup, a BaseExceptionGroup.
        except (Exception, BaseExceptionGroup) as error:  # every operation is probed
            failures.append(f"{operation.label} ({mode.value}): {str(error)[:2000]}")
    # Every other operation was sent requests in both modes: a document that calls
    # nothing invalid (or everything) cannot pass as "Unsatisfiable".
    unsent = sorted(f"{label} ({mode})" for (label, mode), n in sent.items() if not n)
    assert unsent == sorted(f"{label} (negative)" for label in NOTHING_INVALID), unsent
    return failures


async def test_generated_requests_never_break_the_gateway(server: Server) -> None:
    root = f"http://127.0.0.1:{server.http_port}{BASE}"
    failures = await asyncio.to_thread(probe, root)
    assert not failures, "\n\n".join(failures)
