"""The ``rst`` command: ``rst serve --config FILE`` and ``rst dev``."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import trio

from rst import __version__
from rst.config import AeConfig, Config, ConfigError, load_config
from rst.server import Running, serve, wait_for_signal

__all__ = ["main"]

log = logging.getLogger("rst")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    # pynetdicom logs every PDU at INFO; keep it to problems unless asked for DEBUG.
    logging.getLogger("pynetdicom").setLevel("DEBUG" if level == "DEBUG" else "WARNING")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rst", description="DICOMweb gateway for DIMSE PACS")
    parser.add_argument("--version", action="version", version=f"rst {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve DICOMweb for the PACS in the configuration")
    run.add_argument("--config", "-c", type=Path, help="TOML configuration file")
    check = sub.add_parser("check-config", help="validate a configuration and print it")
    check.add_argument("--config", "-c", type=Path)
    dev = sub.add_parser(
        "dev", help="serve DICOMweb in front of an embedded development PACS with a sample study"
    )
    dev.add_argument("--config", "-c", type=Path, help="optional TOML overriding the defaults")
    dev.add_argument("--data", type=Path, help="folder for the development PACS (default: temp)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"rst: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(config.model_dump_json(indent=2))
        return 0
    _setup_logging(config.log_level)
    try:
        if args.command == "serve":
            if not config.aets:
                log.warning(
                    "no [[aets]] configured: only /aets answers "
                    "(see docs/reference/configuration.md)"
                )
            trio.run(_serve, config)
        else:
            trio.run(_dev, config, args.data)
    except OSError as exc:
        print(f"rst: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(config: Config) -> None:
    await serve(config, shutdown_trigger=wait_for_signal)


async def _dev(config: Config, data: Path | None) -> None:
    """rst in front of a development PACS (pynetdicom Q/R SCP) seeded with a sample study."""
    from rst.devpacs import DevPacs, FolderArchive, write_sample_study

    with tempfile.TemporaryDirectory(prefix="rst-dev-") as tmp:
        folder = data or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if not any(folder.rglob("*.dcm")):
            write_sample_study(folder)
        pacs = DevPacs(FolderArchive(folder), aet="DEVPACS", host="127.0.0.1", port=0)
        host, port = pacs.start()
        try:
            ae = AeConfig(aet="DEVPACS", host=host, port=port)
            config = config.model_copy(update={"aets": (*config.aets, ae)})
            async with trio.open_nursery() as nursery:
                running: Running = await nursery.start(
                    lambda task_status: serve(
                        config, shutdown_trigger=wait_for_signal, task_status=task_status
                    )
                )
                pacs.add_destination(config.dimse.aet, *running.dimse_address)
                _print_banner(running, folder)
        finally:
            pacs.stop()


def _print_banner(running: Running, folder: Path) -> None:
    base = f"{running.http_url}/aets/DEVPACS"
    print(
        f"""
rst is serving DICOMweb in front of a development PACS (DEVPACS, data in {folder}).
Try:
  curl {running.http_url}/aets
  curl {base}/studies
  curl '{base}/studies?PatientName=RST*&includefield=all'
  curl -o study.multipart {base}/studies/<StudyInstanceUID from above>
Stop with Ctrl-C.
""",
        flush=True,
    )
