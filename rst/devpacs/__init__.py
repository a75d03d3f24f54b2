"""Embedded development PACS: a pynetdicom Q/R + Storage SCP over a folder of Part 10 files.

``rst dev`` runs :class:`DevPacs` seeded by :func:`write_sample_study`; tests derive
misbehaving PACS from it through :class:`Faults`.
"""

from .archive import FolderArchive, StoredInstance
from .sample import SAMPLE_PATIENT_ID, SAMPLE_PATIENT_NAME, write_sample_study
from .server import DevPacs, Faults

__all__ = [
    "SAMPLE_PATIENT_ID",
    "SAMPLE_PATIENT_NAME",
    "DevPacs",
    "Faults",
    "FolderArchive",
    "StoredInstance",
    "write_sample_study",
]
