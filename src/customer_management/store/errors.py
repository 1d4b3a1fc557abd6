"""Failures of the database itself, as the layers above see them."""


class StoreError(Exception):
    """Base of the store's own exceptions."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or refused the work for a transient reason."""


class StoreConflict(StoreError):
    """A constraint refused the write: a reference vanished or a key was taken meanwhile."""


class StreamStalled(StoreError):
    """A streamed read gave up: its consumer took nothing for too long."""


class StoreBusy(StoreError):
    """No database connection became free within the pool timeout."""


class StoreCancelled(StoreError):
    """The work was stopped: every caller it served had gone, or it took too long."""


class StoreOverloaded(StoreError):
    """The work would not start before its caller's deadline: the queue is too long."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
