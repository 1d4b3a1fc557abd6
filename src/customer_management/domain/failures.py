"""Any failure as the domain error a caller gets: the one place where the store's
failures (database away, busy, overloaded, too slow, a conflicting write) get their
codes. Both front doors ask it; anything unexpected is logged and answered INTERNAL
without its details."""

from __future__ import annotations

import logging

from customer_management.domain.errors import DomainError, ResourceExhausted, Unavailable
from customer_management.store.errors import (
    StoreBusy,
    StoreCancelled,
    StoreConflict,
    StoreOverloaded,
    StoreUnavailable,
)

log = logging.getLogger(__name__)


def as_domain_error(error: Exception) -> DomainError:
    if isinstance(error, DomainError):
        return error
    if isinstance(error, StoreUnavailable):
        return Unavailable(f"the database is unavailable: {error}")
    if isinstance(error, StoreOverloaded):
        return ResourceExhausted(
            f"the service is at its capacity: {error}; retry after a short delay",
            reason="OVERLOADED",
            retry_delay=max(0.05, error.retry_after),
        )
    if isinstance(error, StoreBusy):
        return Unavailable(f"the database is busy: {error}; retry", reason="DATABASE_BUSY")
    if isinstance(error, StoreCancelled):
        # Only a caller still waiting sees this: the work ran past the work timeout.
        return DomainError(
            f"the database work took too long and was stopped: {error}",
            code="DEADLINE_EXCEEDED",
            reason="DATABASE_TIMEOUT",
        )
    if isinstance(error, StoreConflict):
        log.info("constraint refused a write: %s", error)
        return DomainError(
            "a concurrent change conflicts with this request; read the resources again and retry",
            code="ABORTED",
            reason="CONCURRENT_CHANGE",
        )
    log.exception("unexpected error", exc_info=error)
    return DomainError("internal error", code="INTERNAL", reason="INTERNAL")
