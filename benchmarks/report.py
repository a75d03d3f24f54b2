"""Reporting: the machine, PNG plots (matplotlib), and the generated sections of the docs page."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support.dcmtk import dcmtk_tool
from tests.support.orthanc import Orthanc, http_client

from .common import ROOT

DOCS = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img" / "benchmarks"
PACKAGES = (
    "rst",
    "pydicom",
    "pynetdicom",
    "trio",
    "quart-trio",
    "hypercorn",
    "matplotlib",
    "aiobotocore",
    "moto",
)
RST_COLOR, REF_COLOR, OTHER_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


# -- the machine -----------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def _dcmtk_version() -> str:
    line = _first_line([dcmtk_tool("storescp"), "--version"])  # "$dcmtk: storescp v3.6.7 ... $"
    found = re.search(r"v(\d+(?:\.\d+)+)", line)
    return found.group(1) if found else line


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


async def machine(orthanc: Orthanc) -> dict[str, Any]:
    async with http_client(orthanc, timeout=10.0) as client:
        orthanc_version = (await client.get("/system")).json().get("Version", "unknown")
        plugin = await client.get("/plugins/dicom-web")
        plugin_version = plugin.json().get("Version", "unknown") if plugin.is_success else "?"

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "mem_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "orthanc": orthanc_version,
        "orthanc_dicomweb": plugin_version,
        "dcmtk": _dcmtk_version(),
        "curl": _first_line(["curl", "--version"]),
        "packages": {d: version(d) for d in PACKAGES},
    }


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, Orthanc {m['orthanc']} (DICOMweb plugin "
        f"{m['orthanc_dicomweb']}), dcmtk {m['dcmtk']}, curl {m['curl'].split()[1]}; "
        f"pynetdicom {m['packages']['pynetdicom']}, hypercorn {m['packages']['hypercorn']}"
    )


# -- plots -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[str]:
    return [RST_COLOR, REF_COLOR, OTHER_COLOR, "#9467bd"][:n]


def grouped_bars(
    path: Path,
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
    log: bool = False,
) -> None:
    plt = _pyplot()
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(labels) + 2), 4.0), dpi=100)
    for i, ((name, values), color) in enumerate(
        zip(series.items(), _colors(len(series)), strict=True)
    ):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name, color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def lines_plot(
    path: Path,
    xs: Sequence[int],
    series: dict[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for (name, values), color in zip(series.items(), _colors(len(series)), strict=True):
        ax.plot(xs, values, marker="o", label=name, color=color)
        for x, y in zip(xs, values, strict=True):
            ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 5), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(xs), [str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def stacked_bars(
    path: Path,
    labels: Sequence[str],
    parts: dict[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 4.0), dpi=100)
    bottoms = [0.0] * len(labels)
    for (name, values), color in zip(parts.items(), _colors(len(parts)), strict=True):
        ax.bar(labels, values, 0.5, bottom=bottoms, label=name, color=color)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for x, total in enumerate(bottoms):
        ax.annotate(f"{total:.2f} s", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- the docs page ---------------------------------------------------------------------------


def render_section(
    module: ModuleType,
    result: dict[str, Any],
    *,
    started: str,
    runs: int,
    quick: bool,
    took_s: float,
    raw: str,
    plots: bool,
) -> tuple[str, str]:
    """A benchmark's table, and its generated section of the docs page: when and how it ran,
    the table, its plot (drawn into IMAGES if *plots* and the module has a ``plot``).

    A module with ``REPEATED = False`` (load, leaks, soak: one long measurement, its own options)
    is not described by ``--runs``."""
    table: str = module.table(result)
    if getattr(module, "REPEATED", True):
        how = f"{runs} run(s) per measurement (medians){', --quick' if quick else ''}"
    else:
        how = "one measurement (see the method above for its options)"
    body = [
        f"Run {started}, {how}; took {took_s:.0f} s. Raw data: `{raw}` (not committed).",
        "",
        table,
    ]
    if plots and hasattr(module, "plot"):
        IMAGES.mkdir(parents=True, exist_ok=True)
        image = IMAGES / f"{module.NAME}.png"
        module.plot(result, image)
        body += ["", f"![{module.TITLE}](img/benchmarks/{image.name})"]
    return table, "\n".join(body)


def section(name: str, body: str) -> str:
    begin, end = markers(name)
    return f"{begin}\n{body}\n{end}"


def update_docs(sections: dict[str, str]) -> list[str]:
    """Replace each named generated section of docs/benchmarks.md; returns those not found."""
    text = DOCS.read_text()
    missing = []
    for name, body in sections.items():
        begin, end = markers(name)
        start, stop = text.find(begin), text.find(end)
        if start < 0 or stop < start:
            missing.append(name)
            continue
        text = text[:start] + section(name, body) + text[stop + len(end) :]
    DOCS.write_text(text)
    return missing


def timeline_plot(
    path: Path,
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    """Values over (linear) time, one line per series, the y axis from 0."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for (name, values), color in zip(series.items(), _colors(len(series)), strict=True):
        ax.plot(xs, values, marker=".", label=name, color=color)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
