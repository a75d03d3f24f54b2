"""What the deployment examples' tests share: the checkout's root, YAML documents, and the
environment rst's image sets (the Containerfile's ``ENV RST_*``), which every container adds to
what compose.yaml or a manifest gives it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ROOT", "image_environment", "yaml_documents"]

ROOT = Path(__file__).resolve().parents[2]


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    """The documents of a (multi-document) YAML file, empty ones left out."""
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def image_environment() -> dict[str, str]:
    """The ``RST_*`` variables the Containerfile's ``ENV`` instructions set."""
    text = (ROOT / "Containerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    # ENV instructions with their continuation lines
    instructions = re.findall(r"^ENV ((?:.*\\\n)*.*)$", "\n".join(lines), re.M)
    found = dict(re.findall(r"\b(RST_[A-Z_]+)=(\S+)", "\n".join(instructions)))
    assert found, "the Containerfile sets no RST_* variable"
    return found
