"""The ``[audit]`` section: where the audit trail goes (absent: no audit trail).

This module imports nothing of rst's: :mod:`rst.config` embeds it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AuditConfig"]


class AuditConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Annotated[str, Field(min_length=1)]
    """A file the events are appended to, one JSON line each, or ``"-"`` for stdout."""
    source_id: Annotated[str, Field(min_length=1, max_length=256)] = "rst"
    """The AuditSourceID of every event: the name of this gateway in the audit repository."""
    max_query_chars: Annotated[int, Field(ge=0, le=65536)] = 2048
    """The longest query string an event keeps (longer ones are cut and marked so)."""
    queue: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """Events waiting for the writer at most; past that, an event goes to the log at ERROR."""
