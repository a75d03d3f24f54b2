"""Backend-neutral DICOMweb services: what QIDO-RS, WADO-RS and STOW-RS mean, for any archive."""
