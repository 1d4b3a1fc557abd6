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


def probe(root: str) -> list[str]:
    """Runs every operation's generated cases; the failures, one line each."""
    schema = schemathesis.openapi.from_url(f"{root}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 18  # 5 per collection, 3 of the hub

    cases = [
        (operation, mode)
        for operation in operations
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    ]
    for operation, mode in cases:

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
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE  # any id string is valid
        except Exception as error:  # every operation is probed, whatever one finds
            failures.append(f"{operation.label} ({mode.value}): {str(error)[:2000]}")
    return failures


async def test_generated_requests_never_break_the_gateway(server: Server) -> None:
    root = f"http://127.0.0.1:{server.http_port}{BASE}"
    failures = await asyncio.to_thread(probe, root)
    assert not failures, "\n\n".join(failures)
