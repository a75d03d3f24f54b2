"""Exception groups at the edges of rst's nurseries.

trio wraps whatever leaves a nursery in an exception group. Where a nursery is an implementation
detail of a context manager, callers should see the one error that happened, not a group, so
that ``except BadRequest`` and the HTTP error mapping keep working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collapse", "single"]


def single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one leaf exception of *group* (nested groups flattened), or ``None`` if several."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None


@contextmanager
def collapse() -> Iterator[None]:
    """Re-raise a group holding a single exception as that exception."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = single(group)
        if leaf is None:
            raise
        raise leaf from None
