"""DICOM building blocks of rst: pure, sans-IO encoding, parsing and negotiation."""
