"""rst: a DICOMweb gateway (QIDO-RS, WADO-RS, STOW-RS) in front of DIMSE PACS, built on trio."""

__version__ = "0.1.0"
