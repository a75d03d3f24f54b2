"""Exceptions at the edges of rst's nurseries.

trio wraps whatever leaves a nursery in an exception group. Where a nursery is an implementation
detail of a context manager, callers should see the one error that happened, not a group, so
that ``except BadRequest`` and the HTTP error mapping keep working (:func:`collapse`).

Nothing here may leave a reference cycle behind, and :func:`copy_of` helps the code that raises
one error several times not to make one: a cycle through an exception holds its traceback,
whose frames hold what the failed request was working on (a retrieve's response chunks, a
megabyte each), until a full garbage collection, which CPython starts by counting objects, not
bytes (issue 8). So :func:`single` walks without a recursive closure (a function that refers to
itself through its cell, and here to the leaves it found), and :func:`collapse` raises the leaf
with no local still referring to it or to its group, and without leaving the group as the
leaf's ``__context__`` (the group holds the leaf). It also raises a group of cancellations
alone as one ``trio.Cancelled``: such a group reaching third-party code that keeps it in a
local while re-raising it (hypercorn's ``_handle``) would be a cycle there.
"""

from __future__ import annotations

from types import TracebackType
from typing import Literal, TypeVar

import trio

__all__ = ["collapse", "copy_of", "single"]

E = TypeVar("E", bound=BaseException)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The leaf exceptions of *group*, nested groups flattened (without recursion)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    return leaves


def single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one leaf exception of *group* (nested groups flattened), or ``None`` if several."""
    leaves = _leaves(group)
    return leaves[0] if len(leaves) == 1 else None


class _Collapse:
    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        group: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if not isinstance(group, BaseExceptionGroup):
            return False
        leaves = _leaves(group)
        if len(leaves) > 1 and not all(isinstance(leaf, trio.Cancelled) for leaf in leaves):
            return False
        leaf = leaves[0]
        del leaves
        # Raising here makes the group the leaf's __context__ (the group being handled), and
        # the group holds the leaf: a cycle. The leaf leaves as it came, with its own context.
        context, suppress = leaf.__context__, leaf.__suppress_context__
        del kind, group, traceback
        try:
            raise leaf
        finally:
            leaf.__context__, leaf.__suppress_context__ = context, suppress
            del leaf, context


def collapse() -> _Collapse:
    """A context manager that re-raises a group holding a single exception as that exception
    (its ``__cause__`` and ``__context__`` untouched), and a group of cancellations alone as
    one of them (trio's scopes catch any); other groups pass as they are."""
    return _Collapse()


def copy_of(error: E) -> E:
    """A new exception like *error* (type, arguments, attributes, cause), not raised yet.

    For an error raised again on every later call (a sticky failure): the object kept to be
    raised must not be one already raised from here. That one's traceback holds the frame that
    raised it, the frame holds the object that keeps the error (``self``): a cycle."""
    copy = type(error).__new__(type(error), *error.args)
    copy.__dict__.update(error.__dict__)
    copy.__cause__ = error.__cause__
    copy.__suppress_context__ = error.__suppress_context__
    return copy
