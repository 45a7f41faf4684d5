"""Errors of the read-model layer."""

from __future__ import annotations

from eventstore import EventStoreError


class ProjectionError(EventStoreError):
    """Base class of read-model errors."""


class ProjectionOutdated(ProjectionError):
    """A projection's stored version differs from the code's; it must be rebuilt first."""


class ProjectionFailed(ProjectionError):
    """An event could not be applied; the projection stopped at its checkpoint."""


class ProjectionWriteRefused(ProjectionError):
    """A read model's constraint refused an append; nothing was written."""


class RegistryAutoCollisionError(ProjectionWriteRefused):
    """A second open, handle-less registry row for the same semantic group.

    ``colliding_row`` is the open row already there; give the new position a
    registry handle, or close the existing row first.
    """

    def __init__(self, message: str, colliding_row: dict[str, object] | None) -> None:
        super().__init__(message)
        self.colliding_row = colliding_row


class RegistryHandleConflict(ProjectionWriteRefused):
    """A registry handle is already used by another row of the same accounting category."""
