"""The identity of the caller of the current request, for created_by / updated_by.

The API layer sets it per call (from the bearer token or client certificate); a call
without authentication configured is `anonymous`, and the bulk import is `import`.
"""

from __future__ import annotations

from contextvars import ContextVar

from customer_management.store import guards

ANONYMOUS = "anonymous"
current: ContextVar[str] = ContextVar("caller", default=ANONYMOUS)

deadline = guards.deadline
"""When the current request's deadline passes (event loop time); the API layer sets it."""
