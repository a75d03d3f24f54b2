"""The ``rst`` command: ``rst serve --config FILE``, ``rst dev`` and ``rst index AE``."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from rst import __version__, logs
from rst.auth import exposure_problem, exposure_warnings
from rst.backends.dimse import tls as dicom_tls
from rst.config import AeConfig, Config, ConfigError, S3AeConfig, load_config
from rst.errors import RstError
from rst.groups import single
from rst.http import tls
from rst.server import Running, serve, wait_for_signal
from rst.workers import WorkerSlot, read_worker_spec, supervise, until_orphaned

if TYPE_CHECKING:
    from rst.backends.s3.reindex import RebuildReport

__all__ = ["main"]

log = logging.getLogger("rst")


def _setup_logging(config: Config, worker: int | None = None) -> None:
    logs.setup(config.log.level, worker, config.log.format)
    if config.log_level is not None and worker is None:
        log.warning('log_level is deprecated: write [log] level = "%s" instead', config.log.level)


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
    index = sub.add_parser(
        "index", help="rebuild the QIDO-RS index of an S3 AE from the objects in its bucket"
    )
    index.add_argument("aet", metavar="AE", help="the AE title of an [[aets]] with backend = s3")
    index.add_argument("--config", "-c", type=Path, help="TOML configuration file")
    # started by ``rst serve`` when http.workers > 1; reads its specification from stdin
    sub.add_parser("worker", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "worker":
        return _worker_command()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"rst: {exc}", file=sys.stderr)
        return 2
    if args.command in ("check-config", "serve", "dev"):
        try:
            tls.server_context(config.http)  # read once here to fail early; again by each server
            dicom_tls.check(config)  # the receiver's and each PACS's certificates and keys
        except ConfigError as exc:
            print(f"rst: {exc}", file=sys.stderr)
            return 2
    problem = exposure_problem(config)
    if args.command == "check-config":
        print(config.model_dump_json(indent=2))
        for warning in exposure_warnings(config):
            print(f"rst: warning: {warning}", file=sys.stderr)
        if problem is not None:
            print(f"rst: rst serve would refuse to start: {problem}", file=sys.stderr)
            return 2
        return 0
    if problem is not None and args.command in ("serve", "dev"):
        print(f"rst: cannot start: {problem}", file=sys.stderr)
        return 2
    _setup_logging(config)
    if args.command == "index":
        return _index_command(config, args.aet)
    for warning in exposure_warnings(config):
        log.warning("%s", warning)
    if args.command == "serve" and not config.aets:
        log.warning(
            "no [[aets]] configured: only /aets answers (see docs/reference/configuration.md)"
        )
    if args.command == "dev":
        return _run(_dev, config, args.data)
    return _run(supervise if config.http.workers > 1 else _serve, config)


def _worker_command() -> int:
    try:
        config, slot = read_worker_spec(sys.stdin.buffer.readline())
    except (ValueError, KeyError, TypeError, OSError) as exc:
        print(
            "rst: `rst worker` is started by `rst serve` when http.workers > 1, with its "
            f"specification on standard input ({exc})",
            file=sys.stderr,
        )
        return 2
    _setup_logging(config, slot.index)
    return _run(_serve, config, slot)


def _run(function: Callable[..., Awaitable[int | None]], *args: Any) -> int:
    """``trio.run(function, *args)``; start-up failures become one line and status 1."""
    try:
        return trio.run(function, *args) or 0
    except BaseException as exc:
        problem = single(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(problem, OSError | ConfigError | RstError):
            message = getattr(problem, "message", None) or str(problem)
            print(f"rst: cannot start: {message}", file=sys.stderr)
            return 1
        if isinstance(problem, KeyboardInterrupt):
            return 130
        raise


async def _serve(config: Config, worker: WorkerSlot | None = None) -> None:
    await serve(
        config,
        shutdown_trigger=wait_for_signal if worker is None else _worker_shutdown,
        worker=worker,
    )


async def _worker_shutdown() -> None:
    """A worker stops on SIGTERM/SIGINT (from the supervisor) or when the supervisor is gone."""
    async with trio.open_nursery() as nursery:

        async def first(trigger: Callable[[], Awaitable[None]]) -> None:
            await trigger()
            nursery.cancel_scope.cancel()

        nursery.start_soon(first, wait_for_signal)
        nursery.start_soon(first, until_orphaned)


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


def _index_command(config: Config, aet: str) -> int:
    ae = config.ae(aet)
    if not isinstance(ae, S3AeConfig):
        known = ", ".join(a.aet for a in config.aets if isinstance(a, S3AeConfig)) or "none"
        print(
            f"rst: {aet!r} is not an S3 AE of the configuration (S3 AEs: {known})", file=sys.stderr
        )
        return 2
    try:
        report = trio.run(_reindex, ae)
    except (RstError, ConfigError) as exc:
        print(f"rst: cannot index {aet}: {exc}", file=sys.stderr)
        return 1
    except ExceptionGroup as group:  # several workers failed at once (e.g. the index database)
        failed, _ = group.split(RstError)
        if failed is None:
            raise
        print(f"rst: cannot index {aet}: {failed.exceptions[0]}", file=sys.stderr)
        return 1
    print(
        f"{aet}: {report.indexed} indexed, {report.skipped} skipped (not DICOM), "
        f"{report.failed} failed"
    )
    return 1 if report.failed else 0


async def _reindex(ae: S3AeConfig) -> RebuildReport:
    """Rebuild the index of ``ae`` with a progress bar on stderr."""
    import trio_asyncio  # type: ignore[import-untyped]
    from rich.console import Console
    from rich.progress import Progress

    from rst.backends.s3.client import open_client
    from rst.backends.s3.index import Index, index_location
    from rst.backends.s3.reindex import rebuild

    index = await Index.open(index_location(ae))
    try:
        with Progress(console=Console(stderr=True)) as progress:
            task = progress.add_task(f"indexing {ae.aet}", total=None)
            async with trio_asyncio.open_loop(), open_client(ae) as client:
                return await rebuild(
                    client,
                    index,
                    ae.prefix,
                    concurrency=ae.max_concurrency,
                    on_total=lambda total: progress.update(task, total=total),
                    on_done=lambda: progress.advance(task),
                )
    finally:
        await index.close()


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
