"""Orthanc on loopback for scripts/container: a small CT study in it, rst its C-MOVE destination.

    python scripts/container-peers.py WORKDIR

Picks free ports for Orthanc and rst, starts Orthanc (tests/support/orthanc.py: loopback only),
uploads the study, writes WORKDIR/peers.json, waits for SIGTERM or SIGINT, then stops Orthanc.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.loopback import free_port
from tests.support.orthanc import open_orthanc, upload
from tests.support.sample import write_ct_study


async def main(workdir: Path) -> None:
    http_port = free_port()
    dimse_port = free_port()
    while dimse_port == http_port:
        dimse_port = free_port()
    study = write_ct_study(workdir / "study", images=10, series=2)
    modalities = {"RST": ("RST", "127.0.0.1", dimse_port)}
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_orthanc(
            workdir / "orthanc", modalities=modalities, fast_stop=True
        ) as orthanc:
            await upload(orthanc, study.paths)
            peers = {
                "orthanc_dicom_port": orthanc.dicom_port,
                "orthanc_http_port": orthanc.http_port,
                "rst_http_port": http_port,
                "rst_dimse_port": dimse_port,
                "study_uid": study.study_uid,
                "instances": len(study.paths),
            }
            tmp = workdir / "peers.json.tmp"
            tmp.write_text(json.dumps(peers))
            tmp.rename(workdir / "peers.json")
            async for _ in signals:
                break


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]))
