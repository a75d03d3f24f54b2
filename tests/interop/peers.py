"""The PACS of the interoperability matrix, each started with a study and put behind rst.

Three independent DIMSE implementations, each with its own storage:

- ``orthanc``: Orthanc (:mod:`tests.support.orthanc`);
- ``dcmqrscp``: dcmtk's Q/R SCP (:mod:`tests.support.dcmqrscp`);
- ``pynetdicom``: rst's development PACS (:class:`rst.devpacs.DevPacs`), pynetdicom's
  Q/R + Storage SCP over a folder.

:func:`open_archive` starts one with *files* and rst's receiver as its C-MOVE destination ``RST``;
:func:`open_gateway` starts rst with two routes to it: ``MOVE`` (C-MOVE into the receiver) and
``GET`` (C-GET), both calling the PACS by its own AE title (``called_aet``), the receiver
closed to everyone but the PACS (``accept_unknown_callers = false``).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydicom
import trio
from pydicom.dataset import Dataset

from rst.config import AeConfig
from rst.devpacs import DevPacs, FolderArchive
from rst.server import Running
from tests.support.dcmqrscp import open_dcmqrscp
from tests.support.gateway import run_gateway
from tests.support.loopback import free_port
from tests.support.orthanc import http_client, open_orthanc, upload

__all__ = ["KINDS", "RST_AET", "Archive", "Kind", "open_archive", "open_gateway"]

Kind = Literal["orthanc", "dcmqrscp", "pynetdicom"]
KINDS: tuple[Kind, ...] = ("orthanc", "dcmqrscp", "pynetdicom")
RST_AET = "RST"
"""rst's AE title ([dimse] aet): its calling AE title and the C-MOVE destination."""


@dataclass(frozen=True)
class Archive:
    kind: Kind
    aet: str
    port: int
    stored: Callable[[], Awaitable[dict[str, Dataset]]]
    """What the PACS holds now, read from its own storage, by SOP Instance UID."""
    receiver_port: int
    """The port rst's receiver must listen on (the PACS knows it as the destination RST)."""
    host: str = "127.0.0.1"
    devpacs: DevPacs | None = None


@asynccontextmanager
async def open_archive(
    kind: Kind,
    workdir: Path,
    files: Sequence[Path],
    *,
    max_pdu: int | None = None,
    options: Sequence[str] = (),
) -> AsyncIterator[Archive]:
    """Start a PACS of *kind* holding *files*; *max_pdu*: the largest PDU it receives;
    *options*: dcmqrscp's command-line options."""
    receiver_port = free_port()
    destination = ("127.0.0.1", receiver_port)
    if kind == "orthanc":
        extra = {"MaximumPduLength": max_pdu} if max_pdu else None
        async with open_orthanc(
            workdir / "orthanc",
            modalities={"rst": (RST_AET, *destination)},
            extra_config=extra,
            fast_stop=True,
        ) as orthanc:
            await upload(orthanc, files)

            async def orthanc_stored() -> dict[str, Dataset]:
                found: dict[str, Dataset] = {}
                async with http_client(orthanc) as client:
                    listing = await client.get("/instances")
                    listing.raise_for_status()
                    for instance in listing.json():
                        response = await client.get(f"/instances/{instance}/file")
                        response.raise_for_status()
                        ds = pydicom.dcmread(io.BytesIO(response.content))
                        found[str(ds.SOPInstanceUID)] = ds
                return found

            yield Archive(kind, orthanc.aet, orthanc.dicom_port, orthanc_stored, receiver_port)
    elif kind == "dcmqrscp":
        pdu: dict[str, Any] = {"max_pdu": max_pdu} if max_pdu else {}
        async with open_dcmqrscp(
            workdir / "dcmqrscp",
            files=files,
            destinations={RST_AET: destination},
            options=options,
            **pdu,
        ) as qr:

            async def dcmqrscp_stored() -> dict[str, Dataset]:
                paths = await trio.to_thread.run_sync(qr.stored)
                return {uid: pydicom.dcmread(path) for uid, path in paths.items()}

            yield Archive(kind, qr.aet, qr.port, dcmqrscp_stored, receiver_port)
    else:
        folder = workdir / "pynetdicom"
        folder.mkdir(parents=True)
        for path in files:
            shutil.copyfile(path, folder / path.name)
        server = DevPacs(
            FolderArchive(folder),
            aet="PYNETDICOM",
            destinations={RST_AET: destination},
            max_pdu=131072 if max_pdu is None else max_pdu,
        )
        server.start()
        try:

            async def devpacs_stored() -> dict[str, Dataset]:
                def read() -> dict[str, Dataset]:
                    datasets = (pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm")))
                    return {str(ds.SOPInstanceUID): ds for ds in datasets}

                return await trio.to_thread.run_sync(read)

            yield Archive(
                kind, server.aet, server.port, devpacs_stored, receiver_port, devpacs=server
            )
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(server.stop)


@asynccontextmanager
async def open_gateway(
    archive: Archive, *, health: dict[str, Any] | None = None, **route: Any
) -> AsyncIterator[Running]:
    """rst with the routes ``MOVE`` and ``GET`` to *archive* (*route*: more ``[[aets]]`` keys;
    *health*: ``[health]`` keys)."""

    def to(name: str, retrieve: Literal["move", "get"]) -> AeConfig:
        return AeConfig.model_validate(
            {
                "aet": name,
                "called_aet": archive.aet,
                "host": archive.host,
                "port": archive.port,
                "retrieve": retrieve,
                **route,
            }
        )

    async with run_gateway(
        to("MOVE", "move"),
        to("GET", "get"),
        dimse={"aet": RST_AET, "port": archive.receiver_port, "accept_unknown_callers": False},
        health=health,
    ) as running:
        yield running
