"""The audit trail: one structured log line per mutation, with no personal data.

Who (the caller's identity), what (the method), which resource (its id) and the outcome
(the status code name). Request contents never appear, so neither do names, contact
details, PINs or card numbers.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from customer_management.api.errors import WrappingInterceptor
from customer_management.domain.callers import current as current_caller

log = logging.getLogger("customer_management.audit")
SERVICE = "/tmf629.v1.CustomerManagementService/"
MUTATIONS = ("Create", "Update", "Delete", "Verify")


class AuditInterceptor(WrappingInterceptor):
    def wrap(self, method: str, handler: Any) -> Any:
        name = method.removeprefix(SERVICE)
        if name == method or not name.startswith(MUTATIONS) or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary

        async def audited(request: Any, context: Any) -> Any:
            outcome = "UNKNOWN"
            response: Any = None
            try:
                response = await behavior(request, context)
                outcome = "OK"
                return response
            except BaseException:
                code = context.code()
                outcome = code.name if isinstance(code, grpc.StatusCode) else "CANCELLED"
                raise
            finally:
                log.info(
                    "audit",
                    extra={
                        "audit": name,
                        "caller": current_caller.get(),
                        "id": _resource_id(request, response),
                        "outcome": outcome,
                    },
                )

        return handler._replace(unary_unary=audited)


def _resource_id(request: Any, response: Any) -> str:
    """The id the mutation concerns: the created resource's, or the one the request names."""
    messages: list[Any] = [response, request]
    for message in messages:
        descriptor = getattr(message, "DESCRIPTOR", None)
        if descriptor is None:
            continue
        if "id" in descriptor.fields_by_name and message.id:
            return str(message.id)
        for field in descriptor.fields:
            if field.message_type is not None and "id" in field.message_type.fields_by_name:
                inner: Any = getattr(message, field.name)
                if inner.id:
                    return str(inner.id)
    return ""
