"""What every route needs to know about a request: its archive, its UIDs, rst's own URL.

One object per blueprint (built by :func:`rst.http.routes.dicomweb_blueprint`) and passed to
each service's routes, so that the rules — an unknown AE is a 404, a malformed UID a 400 before
anything reaches the archive, a Host header is trusted only when it names this server — live in
one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from quart import request
from werkzeug.sansio.utils import host_is_trusted

from rst.audit import audited
from rst.config import Config
from rst.dicom.uid import check_uid
from rst.errors import UnknownAE
from rst.services.protocols import Backend, RetrieveKeys

__all__ = ["RouteContext"]


@dataclass(frozen=True)
class RouteContext:
    config: Config
    backends: Mapping[str, Backend]

    def backend_for(self, aet: str) -> Backend:
        """The archive *aet* as this request sees it: counted for the audit trail, when there
        is one."""
        try:
            return audited(self.backends[aet])
        except KeyError:
            raise UnknownAE(aet) from None

    def public_host(self) -> str:
        """The host[:port] rst names itself by (RetrieveURLs, BulkDataURIs, Warning headers)
        when ``http.base_url`` is not set: the request's Host header only if it names this
        server or one of ``http.allowed_hosts``, else the address the request came in on — an
        arbitrary Host header must not end up in the URLs rst hands out."""
        server_host, server_port = request.server or ("localhost", None)
        return _public_host(request.host, server_host, server_port, self.config.http.allowed_hosts)

    def base_url(self, aet: str) -> str:
        """rst's URL for the archive *aet* (``…/aets/{aet}``)."""
        root = self.config.http.base_url or f"{request.scheme}://{self.public_host()}"
        return f"{root.rstrip('/')}/aets/{aet}"

    @staticmethod
    def accept_param() -> str | None:
        """The ``accept`` query parameter (PS3.18 §8.3.3.1), which overrides ``Accept``."""
        return request.args.get("accept")

    @staticmethod
    def path_keys(study: str, series: str | None = None, sop: str | None = None) -> RetrieveKeys:
        """The UIDs of a WADO-RS URL, each checked before anything reaches the archive: a
        malformed one is a 400 (a backslash would be a list, ``*`` a wildcard), a well-formed
        one nobody knows a 404 from the archive."""
        return RetrieveKeys(
            check_uid("study", study),
            None if series is None else check_uid("series", series),
            None if sop is None else check_uid("SOP instance", sop),
        )


@lru_cache(maxsize=64)
def _public_host(
    host: str, server_host: str, server_port: int | None, allowed: tuple[str, ...]
) -> str:
    """:meth:`RouteContext.public_host` for one Host header and server address: the same few
    for every request, so worked out once each (the check encodes each name in IDNA)."""
    own = ("localhost", server_host)
    if host and host_is_trusted(host, [*allowed, *own]):
        if _port_of(host) is None and host in own and server_port not in (None, 80, 443):
            # This server named without its port (dicomweb-client does that): the URLs
            # must still reach it.
            return f"{host}:{server_port}"
        return host
    name = f"[{server_host}]" if ":" in server_host else server_host
    return name if server_port is None else f"{name}:{server_port}"


def _port_of(host: str) -> str | None:
    """The port of a ``Host`` value (``name``, ``name:port``, ``[v6]`` or ``[v6]:port``)."""
    tail = host.rsplit("]", 1)[-1]
    return tail.rsplit(":", 1)[1] if ":" in tail else None
