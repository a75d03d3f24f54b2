"""The validated configuration: a TOML file, overlaid by ``RST_*`` environment variables.

Loaded once at start-up into frozen pydantic models; nothing reads the environment afterwards.
Every scalar key has an environment variable named after its path, upper-cased and joined by
``_``: ``[http] port`` is ``RST_HTTP_PORT``, ``[dimse] aet`` is ``RST_DIMSE_AET`` and the key
``port`` of the ``[[aets]]`` entry whose ``aet`` is ``ORTHANC`` is ``RST_AETS_ORTHANC_PORT``.
A list is comma-separated or a JSON array; an array of tables (``[[auth.tokens]]``) only the
latter: ``RST_AUTH_TOKENS='[{"name": "ai", "sha256": "…", "roles": ["ai"]}]'``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from rst.audit.settings import AuditConfig
from rst.auth.settings import AuthConfig
from rst.dicom import uids

__all__ = [
    "AeConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "DimseConfig",
    "HealthConfig",
    "HttpConfig",
    "LogConfig",
    "S3AeConfig",
    "load_config",
]

AeTitle = Annotated[
    str, Field(min_length=1, max_length=16, pattern=r"^[ -\[\]-~]*[!-\[\]-~][ -\[\]-~]*$")
]
Port = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0)]

# Transfer syntaxes the receiver accepts, in order of preference (the acceptor's order decides
# which of the syntaxes a PACS proposes is used). Compressed syntaxes come first so that an
# instance stored compressed arrives as stored (clients asking for "transfer-syntax=*" get it
# unchanged; rst decompresses for the others); Explicit VR Little Endian comes before Implicit
# so that uncompressed data arrives in the syntax DICOMweb prefers.
DEFAULT_TRANSFER_SYNTAXES = (
    uids.JPEG_BASELINE,
    uids.JPEG_EXTENDED,
    uids.JPEG_LOSSLESS,
    uids.JPEG_LOSSLESS_SV1,
    uids.JPEG_LS_LOSSLESS,
    uids.JPEG_LS_NEAR_LOSSLESS,
    uids.JPEG_2000_LOSSLESS,
    uids.JPEG_2000,
    uids.RLE_LOSSLESS,
    uids.EXPLICIT_VR_LITTLE_ENDIAN,
    uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids.IMPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_BIG_ENDIAN,
)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HttpConfig(_Section):
    """The HTTP listener."""

    host: str = "127.0.0.1"
    port: Port = 8080
    base_url: str | None = None
    """Public URL prefix used in RetrieveURL attributes. When not set, the request's Host
    header is used if it names this server, ``localhost`` or one of ``allowed_hosts``;
    otherwise the address the request came in on."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names a request's Host header may give (a leading dot allows subdomains)."""
    max_stow_bytes: Annotated[int, Field(gt=0)] = 4 * 1024**3
    """Largest STOW-RS body accepted (413 beyond)."""
    max_stow_parts: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """Most parts one STOW-RS body may have (413 beyond, or 202 once something was stored)."""
    max_url_bytes: Annotated[int, Field(ge=1024, le=1024**2)] = 16 * 1024
    """Longest request target (path and query string, as sent) served; longer is 414."""
    max_header_bytes: Annotated[int, Field(ge=4096, le=1024**2)] = 32 * 1024
    """Largest request head (request line and headers, counted as HTTP/1.1 sends them, for
    HTTP/2 too) accepted; larger is 431 (:mod:`rst.http.limits`). At least ``max_url_bytes``."""
    graceful_timeout: Seconds = 10.0
    """On SIGTERM/SIGINT, how long in-flight requests may run before they are cancelled."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS (``*`` for any); empty disables CORS headers."""
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Processes serving HTTP and receiving C-STOREs on the same ports (one core each)."""
    max_connections: Annotated[int, Field(ge=1)] = 1000
    """Open HTTP connections per process; further clients wait in the kernel's accept queue."""
    body_timeout: Seconds = 30.0
    """Longest a client may pause while sending a request body (408, and the request ends)."""
    send_timeout: Seconds = 60.0
    """Longest a client may take to accept the next 256 KiB of a response (it is then taken
    for gone: the connection is closed and the request's associations freed)."""
    keep_alive_timeout: Seconds = 75.0
    """How long an idle connection, or one that has not finished its request head, stays open."""
    certfile: Annotated[str, Field(min_length=1)] | None = None
    """PEM file with the server's certificate (and the chain after it): set, the listener speaks
    HTTPS only (HTTP/1.1 and HTTP/2 by ALPN). Read once at start-up (:mod:`rst.http.tls`)."""
    keyfile: Annotated[str, Field(min_length=1)] | None = None
    """PEM file with the certificate's private key, unencrypted (default: in ``certfile``)."""
    client_ca: Annotated[str, Field(min_length=1)] | None = None
    """PEM file of the authorities whose client certificates are accepted: set, every client
    must present one (mutual TLS)."""
    tls_handshake_timeout: Seconds = 10.0
    """Longest a client may take to complete its TLS handshake before its connection is closed."""

    @model_validator(mode="after")
    def _head(self) -> HttpConfig:
        if self.max_header_bytes < self.max_url_bytes:
            raise ValueError(
                "max_header_bytes must be at least max_url_bytes (the URL is part of the head)"
            )
        return self

    @model_validator(mode="after")
    def _tls(self) -> HttpConfig:
        if self.certfile is None and (self.keyfile is not None or self.client_ca is not None):
            raise ValueError("keyfile and client_ca need certfile (TLS is on when it is set)")
        return self


REMOVED_DIMSE_KEYS = ("receiver", "client")
"""Keys of ``[dimse]`` that chose between two DIMSE stacks; rst has one, and a config that still
sets them is refused, naming the key."""


class DimseConfig(_Section):
    """rst's own DIMSE identity and its built-in C-STORE receiver (the C-MOVE destination)."""

    aet: AeTitle = "RST"
    host: str = "127.0.0.1"
    port: Port = 11112
    max_pdu: Annotated[int, Field(ge=0)] = 131072
    """Maximum PDU length offered to peers (0 means unlimited)."""
    stall_timeout: Seconds = 4.0
    """How long an incoming instance may wait for a slow HTTP client before it is spooled to disk.

    Must stay well below the PACS's own C-STORE response timeout (Orthanc: 10 s)."""
    spool_dir: str | None = None
    """Folder for spooled instances (default: the system temporary folder)."""
    spool_max_bytes: Annotated[int, Field(gt=0)] = 2 * 1024**3
    """Largest spool one request may use; beyond it the retrieve fails."""
    channel_size: Annotated[int, Field(ge=1, le=64)] = 4
    """Instances buffered in memory between the receiver and each HTTP response."""
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    """Transfer syntaxes the receiver accepts, most preferred first."""
    max_connections: Annotated[int, Field(ge=1)] = 64
    """Connections the (trio) receiver serves at once, per process; further ones are turned away
    with an A-ASSOCIATE-RJ (transient, local limit exceeded)."""
    handshake_timeout: Seconds = 10.0
    """How long a connection to the (trio) receiver may take to send its A-ASSOCIATE-RQ before
    it is closed; with ``tls_cert``, also how long it may take for its TLS handshake first."""
    tls_cert: Annotated[str, Field(min_length=1)] | None = None
    """PEM file with the receiver's certificate (and the chain after it): set, the receiver
    speaks DICOM TLS only, on the same port (:mod:`rst.backends.dimse.tls`)."""
    tls_key: Annotated[str, Field(min_length=1)] | None = None
    """PEM file with that certificate's private key, unencrypted (default: in ``tls_cert``)."""
    tls_ca: Annotated[str, Field(min_length=1)] | None = None
    """PEM file of the authorities whose certificates the receiver accepts: set, every caller
    must present one (mutual TLS)."""
    accept_unknown_callers: bool = False
    """``false`` (the default): the receiver accepts associations only from the calling AE
    titles of the ``[[aets]]`` (their ``store_calling_aets``), others get an A-ASSOCIATE-RJ
    (calling AE title not recognized). ``true``: any calling AE title is accepted (``rst
    check-config`` warns); an ``[[aets]]`` entry's ``store_from`` still applies to its own
    titles."""

    @model_validator(mode="after")
    def _tls(self) -> DimseConfig:
        if self.tls_cert is None and (self.tls_key is not None or self.tls_ca is not None):
            raise ValueError(
                "tls_key and tls_ca need tls_cert (the receiver's TLS is on when it is set)"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_implementation(cls, data: object) -> object:
        if isinstance(data, Mapping):
            for key in REMOVED_DIMSE_KEYS:
                if key in data:
                    raise ValueError(
                        f"dimse.{key} was removed: rst has one DIMSE implementation "
                        "(the pynetdicom one and the choice between them are gone); delete the key"
                    )
        return data


class CacheConfig(_Section):
    """The retrieve cache: instances retrieved from DIMSE PACS, kept on disk (:mod:`rst.cache`)."""

    path: Annotated[str, Field(min_length=1)] | None = None
    """The cache folder (default: ``rst-cache-{uid}`` in the system temporary folder)."""
    max_bytes: Annotated[int, Field(gt=0)] = 2 * 1024**3
    """Bytes of instances kept; past it the least recently used are evicted."""
    ttl_seconds: Seconds = 3600.0
    """An entry older than this is not served any more (the PACS is asked again)."""
    revalidate_seconds: Annotated[float, Field(ge=0)] = 10.0
    """A study or series served from the cache is first checked against the PACS (a C-FIND
    of its number of instances, then of its SOP Instance UIDs if needed) when last checked
    longer ago than this; 0: every time."""
    relist_seconds: Annotated[float, Field(ge=0)] = 300.0
    """A check lists the SOP Instance UIDs of a level last listed longer ago than this even
    when its number of instances is unchanged (an instance deleted and another sent in its
    place is missed until then); 0: every check lists."""


class HealthConfig(_Section):
    """The readiness checks behind ``GET /readyz`` (:mod:`rst.health`)."""

    interval: Seconds = 10.0
    """Seconds between two checks of every archive (C-ECHO, S3 HeadBucket)."""
    timeout: Seconds = 5.0
    """Longest one check may take; past it the archive counts as not answering."""
    max_age: Seconds = 30.0
    """An archive is ready while its last answer is at most this old."""
    check_archives: bool = True
    """``false``: no background checks; ``/readyz`` then looks at the receiver only."""

    @model_validator(mode="after")
    def _age(self) -> HealthConfig:
        if self.max_age < self.interval + self.timeout:
            raise ValueError(
                "max_age must be at least interval + timeout, or a healthy archive would "
                "turn unready between two checks"
            )
        return self


class LogConfig(_Section):
    """rst's log on standard error."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    """``text``: one readable line per record; ``json``: one JSON object per line."""


class AeConfig(_Section):
    """One remote archive, served under ``/aets/{aet}/``."""

    aet: AeTitle
    """The route name (``/aets/{aet}/``) and, unless ``called_aet`` says otherwise, the PACS's
    AE title."""
    backend: Literal["dimse"] = "dimse"
    called_aet: AeTitle = ""
    """The AE title rst calls this PACS by (default: ``aet``; always set once validated)."""
    host: str = "127.0.0.1"
    port: Port = 104
    retrieve: Literal["move", "get"] = "move"
    """How WADO-RS retrieves instances: C-MOVE into rst's receiver, or C-GET on the association."""
    calling_aet: AeTitle | None = None
    """The AE title rst calls this PACS with (default: ``[dimse] aet``)."""
    max_associations: Annotated[int, Field(ge=1)] = 8
    """Concurrent associations to this PACS; further requests queue."""
    queue_timeout: Seconds = 30.0
    """Longest a request waits in that queue before it is answered 503 with ``Retry-After``."""
    connect_timeout: Seconds = 10.0
    """TCP connect plus association negotiation."""
    find_timeout: Seconds = 30.0
    """Longest wait for the next C-FIND response."""
    first_store_timeout: Seconds = 120.0
    """Longest wait from a C-MOVE/C-GET request to its first C-STORE (PACS may fetch from tape)."""
    idle_timeout: Seconds = 30.0
    """Longest wait between two C-STOREs (or the final response) of a retrieve."""
    store_timeout: Seconds = 60.0
    """Longest wait for a C-STORE response (STOW-RS), and for the PACS to take any of a PDU
    rst sends it (a PACS that stops reading)."""
    cancel_timeout: Seconds = 2.0
    """After C-CANCEL, how long the PACS may take to end the operation before rst aborts."""
    correlation: Literal["auto", "move-originator", "uid"] = "auto"
    """How incoming C-STOREs find their request. ``move-originator`` trusts the Move Originator
    AE Title and Message ID; ``uid`` matches Study/Series/SOP Instance UIDs against the open
    retrieves from this PACS (for PACS that omit those fields); ``auto`` uses the first when the
    fields are present and the second when not."""
    cache: bool = True
    """Keep retrieved instances in the retrieve cache (``[cache]``) and serve them from it."""
    metadata: Literal["auto", "full", "without-bulk-data"] = "auto"
    """How WADO-RS metadata retrieves: ``full`` instances (C-MOVE or C-GET as ``retrieve``
    says); ``without-bulk-data``, a C-GET of Composite Instance Retrieve Without Bulk Data
    (PS3.4 Annex Z) that leaves pixel data out, bypassing the cache, with a full retrieve where
    the PACS refuses or fails it; ``auto``: without bulk data when ``cache = false``, else full
    (the full instances fill the cache for the frames a viewer asks for next)."""
    store_calling_aets: tuple[AeTitle, ...] = ()
    """The AE titles this PACS calls rst's C-STORE receiver with (default: ``[called_aet]``)."""
    store_from: tuple[str, ...] = ()
    """Addresses or networks (CIDR, IPv4 or IPv6) this PACS's C-STOREs may come from, e.g.
    ``["10.0.0.5", "10.0.1.0/24"]``; empty: any address."""
    tls: bool = False
    """Every association rst opens to this PACS (C-ECHO, C-FIND, C-MOVE, C-GET, C-STORE) speaks
    DICOM TLS, BCP 195 profile (:mod:`rst.backends.dimse.tls`); the PACS's certificate must be
    valid for ``host``."""
    tls_ca: Annotated[str, Field(min_length=1)] | None = None
    """PEM file of the authorities that may sign the PACS's certificate (default: the system's)."""
    tls_cert: Annotated[str, Field(min_length=1)] | None = None
    """PEM file with rst's client certificate for this PACS (and the chain after it), for a
    PACS that asks for one; none is sent when not set."""
    tls_key: Annotated[str, Field(min_length=1)] | None = None
    """PEM file with that certificate's private key, unencrypted (default: in ``tls_cert``)."""

    @model_validator(mode="before")
    @classmethod
    def _called_defaults_to_aet(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("called_aet") is None and "aet" in data:
            return {**data, "called_aet": data["aet"]}
        return data

    @field_validator("aet", "called_aet")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _tls(self) -> AeConfig:
        if not self.tls and (self.tls_ca or self.tls_cert or self.tls_key):
            raise ValueError("tls_ca, tls_cert and tls_key need tls = true")
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key needs tls_cert (the certificate it belongs to)")
        return self

    @field_validator("store_calling_aets")
    @classmethod
    def _strip_all(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(aet.strip() for aet in value)

    @field_validator("store_from")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip())  # strict: no host bits beyond the prefix
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network: {exc}") from None
        return tuple(str(ipaddress.ip_network(item.strip())) for item in value)

    @property
    def callers(self) -> tuple[str, ...]:
        """The AE titles this PACS calls rst's receiver with (by default the title rst calls
        it by: a PACS calls with its own)."""
        return self.store_calling_aets or (self.called_aet,)


class S3AeConfig(_Section):
    """One archive in S3-compatible object storage, served under ``/aets/{aet}/``.

    Objects are laid out as DICOM-RST does: ``{prefix}{study}/{series}/{instance}.dcm``."""

    aet: AeTitle
    backend: Literal["s3"]
    endpoint: str | None = None
    """The S3 endpoint URL (e.g. ``http://127.0.0.1:9000`` for MinIO); AWS when not set."""
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    region: str = "us-east-1"
    addressing: Literal["path", "virtual"] = "path"
    access_key_env: str | None = None
    """Name of the environment variable holding the access key (the AWS chain when not set)."""
    secret_key_env: str | None = None
    """Name of the environment variable holding the secret key."""
    prefix: str = ""
    """Key prefix under which the instances lie (e.g. ``dicom/``)."""
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    """Objects fetched or stored at the same time for one request."""
    connect_timeout: Seconds = 10.0
    read_timeout: Seconds = 60.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Attempts per S3 call on throttling and 5xx, with exponential backoff."""
    ranged_reads_above: Annotated[int, Field(ge=0)] = 8 << 20
    """Objects larger than this many bytes are read in parts (ranged GETs): metadata from the
    object's head, frames from their own bytes. Smaller ones are read in one GET."""
    index: str | None = None
    """Where the QIDO-RS index lives: a SQLite file path (default: ``{aet}.sqlite3`` in the
    current directory) or a ``postgresql://`` URL for deployments with several replicas."""

    @field_validator("aet")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def _backend_of(value: Any) -> str:
    backend = value.get("backend", "dimse") if isinstance(value, dict) else value.backend
    return str(backend)


ArchiveConfig = Annotated[
    Annotated[AeConfig, Tag("dimse")] | Annotated[S3AeConfig, Tag("s3")],
    Discriminator(_backend_of),
]
"""An ``[[aets]]`` entry: ``backend = "dimse"`` (the default) or ``"s3"``."""


class Config(_Section):
    """The whole configuration."""

    http: HttpConfig = HttpConfig()
    dimse: DimseConfig = DimseConfig()
    cache: CacheConfig = CacheConfig()
    health: HealthConfig = HealthConfig()
    log: LogConfig = LogConfig()
    aets: tuple[ArchiveConfig, ...] = ()
    auth: AuthConfig | None = None
    """Who may call rst (:mod:`rst.auth`); absent: nobody is asked for credentials."""
    audit: AuditConfig | None = None
    """Where the audit trail goes (:mod:`rst.audit`); absent: no audit trail."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    """Deprecated: ``[log] level``. Still read when ``[log] level`` is not set."""

    @model_validator(mode="after")
    def _deprecated_log_level(self) -> Config:
        if self.log_level is None or self.log_level == self.log.level:
            return self
        if "level" in self.log.model_fields_set:
            raise ValueError(
                "log_level is deprecated and [log] level is set too: keep [log] level only"
            )
        return self.model_copy(
            update={"log": self.log.model_copy(update={"level": self.log_level})}
        )

    @model_validator(mode="after")
    def _unique_aets(self) -> Config:
        seen: set[str] = set()
        for ae in self.aets:
            if ae.aet in seen:
                raise ValueError(f"aets: AE title {ae.aet!r} is configured twice")
            seen.add(ae.aet)
        return self

    @model_validator(mode="after")
    def _workers(self) -> Config:
        if self.http.workers == 1:
            return self
        for ae in self.aets:
            if isinstance(ae, AeConfig) and ae.correlation == "uid":
                raise ValueError(
                    f'aets: {ae.aet}: correlation = "uid" needs http.workers = 1 (with '
                    "several workers the Move Originator Message ID names the worker)"
                )
        return self

    @model_validator(mode="after")
    def _receiver_tls(self) -> Config:
        if self.dimse.tls_cert is not None and self.http.workers > 1:
            raise ValueError(
                "dimse.tls_cert needs http.workers = 1 (a worker cannot pass a TLS association "
                "on to the worker whose C-MOVE it serves)"
            )
        return self

    def ae(self, aet: str) -> AeConfig | S3AeConfig | None:
        """The configured archive with this AE title, if any."""
        return next((ae for ae in self.aets if ae.aet == aet), None)

    def calling_aet(self, ae: AeConfig) -> str:
        return ae.calling_aet or self.dimse.aet


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read *path* (TOML, optional), overlay ``RST_*`` variables from *environ*, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    _overlay_environment(data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        # "aets.0.dimse.port": the union's tag is not part of the key a person wrote
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "aets" and loc[2] in ("dimse", "s3"):
            del loc[2]
        if error["type"] == "union_tag_invalid":
            loc.append("backend")
        key = ".".join(str(part) for part in loc) or "(top level)"
        lines.append(f"{key}: {error['msg']}")
    return "invalid configuration: " + "; ".join(lines)


def _overlay_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    sections: dict[str, type[BaseModel]] = {
        "HTTP": HttpConfig,
        "DIMSE": DimseConfig,
        "CACHE": CacheConfig,
        "AUTH": AuthConfig,
        "AUDIT": AuditConfig,
        "HEALTH": HealthConfig,
        "LOG": LogConfig,  # RST_LOG_LEVEL, once the top-level log_level, is [log] level
    }
    for name, value in sorted(environ.items()):
        if not name.startswith("RST_"):
            continue
        rest = name[4:]
        head, _, key = rest.partition("_")
        if head in sections:
            model = sections[head]
            if key.lower() not in model.model_fields:
                raise ConfigError(f"environment variable {name} names no key of [{head.lower()}]")
            section = data.setdefault(head.lower(), {})
            if not isinstance(section, dict):
                raise ConfigError(f"{head.lower()}: must be a table ([{head.lower()}])")
            section[key.lower()] = _env_value(model, key.lower(), name, value)
        elif head == "AETS":
            _overlay_ae(data, name, key, value)


def _overlay_ae(data: dict[str, Any], name: str, rest: str, value: str) -> None:
    # RST_AETS_<AET>_<KEY>; the AE title may itself contain "_", the key is matched from the end.
    fields = {**S3AeConfig.model_fields, **AeConfig.model_fields}
    for field in sorted(fields, key=len, reverse=True):
        suffix = "_" + field.upper()
        if rest.endswith(suffix) and len(rest) > len(suffix):
            aet = rest[: -len(suffix)]
            aets = data.setdefault("aets", [])
            if not isinstance(aets, list) or not all(isinstance(ae, dict) for ae in aets):
                raise ConfigError("aets: must be an array of tables ([[aets]])")
            entry = next(
                (ae for ae in aets if str(ae.get("aet", "")).strip().upper() == aet.upper()), None
            )
            if entry is None:
                entry = {"aet": aet}
                aets.append(entry)
            model = S3AeConfig if str(entry.get("backend")) == "s3" else AeConfig
            entry[field] = _env_value(
                model if field in model.model_fields else S3AeConfig, field, name, value
            )
            return
    raise ConfigError(
        f"environment variable {name} names no key of [[aets]] (RST_AETS_<AET>_<KEY>)"
    )


def _env_value(model: type[BaseModel], field: str, name: str, value: str) -> Any:
    """Lists (tuple-typed keys) are comma-separated in the environment, or a JSON array — the
    only way to give an array of tables such as ``[[auth.tokens]]`` (``RST_AUTH_TOKENS='[{"name":
    …}]'``, e.g. from a Kubernetes Secret); pydantic coerces the scalars from their string form."""
    annotation = model.model_fields[field].annotation
    if getattr(annotation, "__origin__", None) is tuple:
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:  # its message quotes no part of the value
                raise ConfigError(
                    f"environment variable {name}: not a JSON array ({exc.msg})"
                ) from None
        return [item.strip() for item in value.split(",") if item.strip()]
    return value
