"""A trio-friendly Orthanc launcher for tests and benchmarks.

    async with open_orthanc(tmp_path / "orthanc") as orthanc:
        await upload(orthanc, study.paths)
        # DIMSE: 127.0.0.1:orthanc.dicom_port, AE orthanc.aet
        # REST: orthanc.http_url; DICOMweb: orthanc.dicomweb_url

Orthanc 1.10 (Debian) always binds 0.0.0.0; it is started with the LD_PRELOAD shim from
``loopback.py`` so both of its ports listen on 127.0.0.1 only. Ports are picked free on each start
(no fixed numbers); the data folder lives in ``workdir``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from .loopback import (
    default_build_dir,
    free_port,
    listening_sockets,
    log_tail,
    loopback_preload,
    preload_env,
    stop_process,
)

__all__ = [
    "DICOMWEB_PLUGIN",
    "ORTHANC_BIN",
    "WORKLISTS_PLUGIN",
    "Orthanc",
    "OrthancError",
    "add_modality",
    "delete_all",
    "dicom_tls_config",
    "http_client",
    "open_orthanc",
    "require_orthanc",
    "upload",
    "worklist_config",
]

ORTHANC_BIN = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
WORKLISTS_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
READY_TIMEOUT = 20.0
START_ATTEMPTS = 3  # when a port was taken meanwhile: free_port() is racy


class OrthancError(RuntimeError):
    pass


def require_orthanc() -> None:
    """Raise (never skip) when Orthanc, its DICOMweb plugin or gcc is missing."""
    required = (ORTHANC_BIN, DICOMWEB_PLUGIN, Path("/usr/bin/gcc"))
    missing = [str(p) for p in required if not p.exists()]
    if missing:
        raise OrthancError(
            f"missing {', '.join(missing)}: run scripts/install-deps "
            "(installs orthanc, orthanc-dicomweb, dcmtk, gcc)"
        )


@dataclass(frozen=True)
class Orthanc:
    aet: str
    dicom_port: int
    http_port: int
    http_url: str  # "http://127.0.0.1:PORT", no trailing slash
    storage: Path
    host: str = "127.0.0.1"
    pid: int = 0
    log: Path | None = None
    config: Path | None = None

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb service root, no trailing slash: ``http://127.0.0.1:PORT/dicom-web``."""
        return f"{self.http_url}/dicom-web"


def _modality(
    aet: str, host: str, port: int, *, allow_get: bool = True, tls: bool = False
) -> dict[str, Any]:
    modality: dict[str, Any] = {
        "AET": aet,
        "Host": host,
        "Port": port,
        "AllowEcho": True,
        "AllowFind": True,
        "AllowGet": allow_get,
        "AllowMove": True,
        "AllowStore": True,
    }
    if tls:
        modality["UseDicomTls"] = True
    return modality


def _config(
    workdir: Path,
    *,
    aet: str,
    dicom_port: int,
    http_port: int,
    modalities: Mapping[str, tuple[str, str, int]],
    allow_get: bool,
    extra_config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    storage = workdir / "storage"
    config: dict[str, Any] = {
        "Name": f"rst-test-{aet}",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "HttpCompressionEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SslEnabled": False,
        "KeepAlive": True,
        "HttpTimeout": 60,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": allow_get,
        "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {
            name: _modality(m_aet, host, port, allow_get=allow_get)
            for name, (m_aet, host, port) in modalities.items()
        },
        "DicomModalitiesInDatabase": False,
        "DicomScuTimeout": 10,
        "DicomAssociationCloseDelay": 0,
        "ConcurrentJobs": 2,
        "SaveJobs": False,
        "JobsHistorySize": 10,
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
        "LogExportedResources": False,
    }
    for key, value in (extra_config or {}).items():
        # One level deep merge, so e.g. {"DicomWeb": {"StudiesMetadata": "Full"}} keeps Enable/Root.
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def worklist_config(folder: Path) -> dict[str, Any]:
    """``extra_config`` that loads the ModalityWorklists plugin, serving the ``*.wl`` files of
    *folder* over Modality Worklist C-FIND (without it Orthanc refuses the worklist context),
    from any calling AE title (else Orthanc aborts the association of one it does not list)."""
    if not WORKLISTS_PLUGIN.exists():
        raise OrthancError(f"missing {WORKLISTS_PLUGIN}: run scripts/install-deps")
    return {
        "Plugins": [str(DICOMWEB_PLUGIN), str(WORKLISTS_PLUGIN)],
        "Worklists": {"Enable": True, "Database": str(folder)},
        "DicomAlwaysAllowFindWorklist": True,
    }


def dicom_tls_config(
    cert: Path, key: Path, trusted: Path, *, remote_certificate_required: bool = True
) -> dict[str, Any]:
    """``extra_config`` for DICOM TLS (Orthanc 1.9+): its DICOM port speaks TLS only, with
    *cert* and *key* (PEM) for its server and for its calls to modalities with
    ``UseDicomTls``; peers must present a certificate chaining to *trusted* (unless not
    *remote_certificate_required*)."""
    return {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(cert),
        "DicomTlsPrivateKey": str(key),
        "DicomTlsTrustedCertificates": str(trusted),
        "DicomTlsRemoteCertificateRequired": remote_certificate_required,
    }


def http_client(orthanc: Orthanc, *, timeout: float = 60.0) -> httpx.AsyncClient:
    """An httpx client on Orthanc's REST API (ignores proxy settings from the environment)."""
    return httpx.AsyncClient(base_url=orthanc.http_url, timeout=timeout, trust_env=False)


async def _ready(
    proc: trio.Process, client: httpx.AsyncClient, dicom_port: int, deadline: float
) -> bool:
    """Poll until Orthanc answers /system and listens on its DICOM port; False if it exited."""
    while True:
        if proc.returncode is not None or proc.poll() is not None:
            return False
        try:
            response = await client.get("/system", timeout=2.0)
            if response.status_code == 200 and any(
                s.port == dicom_port for s in listening_sockets(proc.pid)
            ):
                return True
        except (httpx.TransportError, OSError):
            pass
        if trio.current_time() > deadline:
            raise OrthancError("Orthanc did not become ready in time")
        await trio.sleep(0.02)  # bounded readiness polling of a freshly started process


def _port_taken(log_path: Path, offset: int) -> bool:
    with log_path.open("rb") as log:
        log.seek(offset)
        return b"already in use" in log.read()


@asynccontextmanager
async def open_orthanc(
    workdir: Path,
    *,
    aet: str = "ORTHANC",
    modalities: Mapping[str, tuple[str, str, int]] | None = None,
    allow_get: bool = True,
    extra_config: Mapping[str, Any] | None = None,
    fast_stop: bool = False,
    ready_timeout: float = READY_TIMEOUT,
    preload: Path | None = None,
) -> AsyncIterator[Orthanc]:
    """Start Orthanc on free loopback ports with its data in ``workdir``; stop it on exit.

    ``modalities``: ``{name: (aet, host, port)}`` known to Orthanc (C-MOVE destinations), all
    with AllowEcho/Find/Get/Move/Store. ``allow_get``: C-GET allowed for any peer.
    ``extra_config``: merged into the generated JSON config (one level deep). ``fast_stop``:
    SIGKILL on exit instead of SIGTERM (~3-4 s) — fine when ``workdir`` is thrown away.
    Cleanup is shielded: a cancelled caller never leaves an Orthanc behind.
    """
    require_orthanc()
    await trio.Path(workdir).mkdir(parents=True, exist_ok=True)
    shim = preload or loopback_preload(default_build_dir())
    env = preload_env(shim)
    config_path = workdir / "orthanc.json"
    log_path = workdir / "orthanc.log"
    proc: trio.Process | None = None
    try:
        orthanc: Orthanc | None = None
        for _attempt in range(START_ATTEMPTS):
            dicom_port, http_port = free_port(), free_port()
            while http_port == dicom_port:
                http_port = free_port()
            config = _config(
                workdir,
                aet=aet,
                dicom_port=dicom_port,
                http_port=http_port,
                modalities=modalities or {},
                allow_get=allow_get,
                extra_config=extra_config,
            )
            config_path.write_text(json.dumps(config, indent=2))
            with log_path.open("ab") as log:
                log_offset = log.tell()
                proc = await trio.lowlevel.open_process(
                    [str(ORTHANC_BIN), str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(workdir),
                )
            http_url = f"http://127.0.0.1:{http_port}"
            deadline = trio.current_time() + ready_timeout
            async with httpx.AsyncClient(base_url=http_url, trust_env=False) as client:
                try:
                    ready = await _ready(proc, client, dicom_port, deadline)
                except OrthancError as exc:
                    raise OrthancError(f"{exc}; log tail:\n{log_tail(log_path)}") from None
            if ready:
                orthanc = Orthanc(
                    aet=aet,
                    dicom_port=dicom_port,
                    http_port=http_port,
                    http_url=http_url,
                    storage=workdir / "storage",
                    pid=proc.pid,
                    log=log_path,
                    config=config_path,
                )
                break
            await stop_process(proc, kill=True)
            if not _port_taken(log_path, log_offset):
                break  # a real configuration error: retrying cannot help
            # free_port() lost a race: retry with fresh ports
        if orthanc is None:
            raise OrthancError(
                f"Orthanc exited during start-up (config {config_path}); "
                f"log tail:\n{log_tail(log_path)}"
            )
        yield orthanc
    finally:
        if proc is not None:
            await stop_process(proc, kill=fast_stop)


async def upload(orthanc: Orthanc, paths: Iterable[Path | str]) -> list[str]:
    """POST each file to /instances; returns the Orthanc instance ids. Raises on any failure."""
    ids: list[str] = []
    async with http_client(orthanc) as client:
        for path in paths:
            body = await trio.Path(path).read_bytes()
            response = await client.post(
                "/instances", content=body, headers={"Content-Type": "application/dicom"}
            )
            if response.status_code != 200:
                raise OrthancError(f"upload of {path}: HTTP {response.status_code} {response.text}")
            result = response.json()
            if result.get("Status") not in ("Success", "AlreadyStored"):
                raise OrthancError(f"upload of {path}: {result}")
            ids.append(result["ID"])
    return ids


async def delete_all(orthanc: Orthanc) -> None:
    """Delete every patient (and so every study, series, instance) stored in Orthanc."""
    async with http_client(orthanc) as client:
        response = await client.get("/patients")
        response.raise_for_status()
        for patient in response.json():
            deleted = await client.delete(f"/patients/{patient}")
            deleted.raise_for_status()


async def add_modality(
    orthanc: Orthanc,
    name: str,
    aet: str,
    host: str,
    port: int,
    *,
    allow_get: bool = True,
    tls: bool = False,
) -> None:
    """Declare (or replace) a DICOM modality at run time (PUT /modalities/{name}); *tls*:
    Orthanc calls it over DICOM TLS (``UseDicomTls``, see :func:`dicom_tls_config`)."""
    async with http_client(orthanc) as client:
        response = await client.put(
            f"/modalities/{name}", json=_modality(aet, host, port, allow_get=allow_get, tls=tls)
        )
        if response.status_code != 200:
            raise OrthancError(
                f"PUT /modalities/{name}: HTTP {response.status_code} {response.text}"
            )
