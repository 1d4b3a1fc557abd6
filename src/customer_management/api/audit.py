"""The audit trail: one structured log line per mutation, with no personal data.

Who (the caller's identity), what (the method), which resource (its id) and the outcome
(the status code name). Request contents never appear, so neither do names, contact
details, PINs or card numbers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from customer_management.api.errors import _Interceptor
from customer_management.domain.callers import current as current_caller

log = logging.getLogger("customer_management.audit")
SERVICE = "/tmf629.v1.CustomerManagementService/"
MUTATIONS = ("Create", "Update", "Delete", "Verify")


class AuditInterceptor(_Interceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = details.method
        handler: Any = await continuation(details)
        name = method.removeprefix(SERVICE)
        if name == method or not name.startswith(MUTATIONS) or handler.unary_unary is None:
            unaudited: grpc.RpcMethodHandler[Any, Any] = handler
            return unaudited
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
                    json.dumps(
                        {
                            "audit": name,
                            "caller": current_caller.get(),
                            "id": _resource_id(request, response),
                            "outcome": outcome,
                        }
                    )
                )

        wrapped: grpc.RpcMethodHandler[Any, Any] = handler._replace(unary_unary=audited)
        return wrapped


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
