"""dcmtk's ``dcmqrscp`` as a test PACS: a Query/Retrieve SCP with its own storage.

    async with open_dcmqrscp(tmp_path / "qr", files=study.paths,
                             destinations={"RST": ("127.0.0.1", receiver_port)}) as pacs:
        # DIMSE: 127.0.0.1:pacs.port, AE pacs.aet; what it stores: pacs.stored()

It answers C-ECHO, C-FIND, C-MOVE and C-GET (study and patient root) and stores what it is sent
(C-STORE) in one storage area, the folder of its AE title. ``files`` are copied there and
registered in its index with ``dcmqridx`` before it starts (no network involved). A C-MOVE
destination must be in its ``HostTable`` (``destinations``: AE title → host, port), written
into the generated ``dcmqrscp.cfg``; dcmqrscp opens the sub-association with its own AE title
as the calling AE title.

dcmqrscp 3.6.7 crashes after the first association in ``--single-process`` mode, so it runs in
its default mode, a child process per association; it is started in a session of its own and
the whole process group is stopped on exit. It binds every interface: the LD_PRELOAD shim
(:mod:`.loopback`) keeps it on 127.0.0.1.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
import trio

from .dcmtk import READY_TIMEOUT, DcmtkError, dcmtk_tool, open_listening, require_dcmtk, run_tool

__all__ = ["INDEX_FILE", "Dcmqrscp", "open_dcmqrscp", "require_dcmqrscp"]

INDEX_FILE = "index.dat"
MIN_PDU, MAX_PDU = 4096, 131072
"""The range of PDU lengths dcmqrscp takes (``--max-pdu``)."""


def require_dcmqrscp() -> None:
    """Raise (never skip) when dcmqrscp or dcmqridx is missing."""
    require_dcmtk()
    missing = [t for t in ("dcmqrscp", "dcmqridx") if not Path(dcmtk_tool(t)).exists()]
    if missing:
        raise DcmtkError(f"dcmtk tools missing ({', '.join(missing)}): run scripts/install-deps")


@dataclass(frozen=True)
class Dcmqrscp:
    aet: str
    port: int
    storage: Path
    """The storage area: the instances and dcmqrscp's index (``index.dat``)."""
    log: Path
    pid: int
    """dcmqrscp's process, and its process group (the children serving associations)."""
    host: str = "127.0.0.1"

    def stored(self) -> dict[str, Path]:
        """The files in the storage area, by SOP Instance UID."""
        found: dict[str, Path] = {}
        for path in sorted(self.storage.iterdir()):
            if path.name == INDEX_FILE or not path.is_file():
                continue
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            found[str(ds.SOPInstanceUID)] = path
        return found


def _config(
    port: int, aet: str, storage: Path, destinations: Mapping[str, tuple[str, int]], max_pdu: int
) -> str:
    hosts = "\n".join(
        f"dest{number} = ({title}, {host}, {dest_port})"
        for number, (title, (host, dest_port)) in enumerate(sorted(destinations.items()))
    )
    return (
        f"NetworkTCPPort = {port}\n"
        f"MaxPDUSize = {max_pdu}\n"
        "MaxAssociations = 16\n\n"
        f"HostTable BEGIN\n{hosts}\nHostTable END\n\n"
        "VendorTable BEGIN\nVendorTable END\n\n"
        "AETable BEGIN\n"
        f"{aet} {storage} RW (1000, 1024mb) ANY\n"
        "AETable END\n"
    )


@asynccontextmanager
async def open_dcmqrscp(
    workdir: Path,
    *,
    aet: str = "DCMQRSCP",
    files: Iterable[Path] = (),
    destinations: Mapping[str, tuple[str, int]] | None = None,
    max_pdu: int = 16384,
    options: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT,
) -> AsyncIterator[Dcmqrscp]:
    """Run dcmqrscp as AE *aet* on a free 127.0.0.1 port with *files* in its storage.

    *max_pdu*: the largest PDU it receives (4096 to 131072). *options*: more command-line
    options (e.g. ``["--disable-get"]``). The log (``-v``) is ``workdir/dcmqrscp.log``."""
    require_dcmqrscp()
    if not MIN_PDU <= max_pdu <= MAX_PDU:
        raise ValueError(f"dcmqrscp takes a max PDU of {MIN_PDU} to {MAX_PDU}, not {max_pdu}")
    storage = workdir / aet
    await trio.Path(storage).mkdir(parents=True, exist_ok=True)
    copies = []
    for path in files:
        copy = storage / path.name
        await trio.to_thread.run_sync(shutil.copyfile, path, copy)
        copies.append(str(copy))
    if copies:
        indexed = await run_tool("dcmqridx", str(storage), *copies)
        if indexed.returncode != 0:
            raise DcmtkError(f"dcmqridx failed:\n{indexed.output}")
    log_path = workdir / "dcmqrscp.log"
    config_path = workdir / "dcmqrscp.cfg"

    def command(port: int) -> list[str]:
        config_path.write_text(_config(port, aet, storage, destinations or {}, max_pdu))
        argv = [dcmtk_tool("dcmqrscp"), "-v", "-dhl", "-c", str(config_path), *options]
        return [*argv, str(port)]

    async with open_listening(
        "dcmqrscp", command, log_path, ready_timeout, cwd=workdir, process_group=True
    ) as (port, pid):
        yield Dcmqrscp(aet, port, storage, log_path, pid)
