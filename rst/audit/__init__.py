"""The audit trail (``[audit]``): one event per search, retrieve and store, in the shape of a
DICOM audit message (PS3.15 Annex A.5), as JSON lines.

The data flow reads from the file names: ``hooks.py`` (the middleware and request hooks: one
:class:`~rst.audit.record.AuditRecord` per request, filled while it runs by ``record.py``'s
counting backend) → ``events.py`` (the record as an audit message, pure) → ``trail.py`` (the
one writer task, to a file or stdout). ``settings.py`` is the section.
"""

from rst.audit.events import Ending, event, outcome_of
from rst.audit.hooks import AuditMiddleware, audited, install_audit, note_identity
from rst.audit.record import AuditedBackend, AuditRecord
from rst.audit.settings import AuditConfig
from rst.audit.trail import AuditTrail

__all__ = [
    "AuditConfig",
    "AuditMiddleware",
    "AuditRecord",
    "AuditTrail",
    "AuditedBackend",
    "Ending",
    "audited",
    "event",
    "install_audit",
    "note_identity",
    "outcome_of",
]
