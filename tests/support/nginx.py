"""A real nginx for tests, running the configuration of ``deploy/kubernetes/nginx.yaml``.

    conf = local_config(KUBERNETES_NGINX_CONF, upstreams=["127.0.0.1:8001", "127.0.0.1:8002"])
    async with open_nginx(tmp_path / "nginx", conf) as url:   # "http://127.0.0.1:PORT"
        ...

The manifest's configuration is for a cluster; :func:`local_config` changes only what ties it
to one: the upstream servers (the pods' DNS names, re-resolved with ``resolve``, which needs
nginx 1.27.3 while Debian 12 has 1.22) become the given loopback addresses, the cluster's
``resolver`` goes, the listener moves to a free loopback port, and the pid and temporary files
to the work folder. The ``map`` blocks, the ``hash … consistent`` and the proxy settings stay
as deployed. nginx comes from Debian's ``nginx-light`` (scripts/install-deps).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from .http_server import open_http_server

__all__ = ["NGINX_BIN", "NginxError", "local_config", "open_nginx"]

NGINX_BIN = Path("/usr/sbin/nginx")
_PORT = "{port}"  # where local_config leaves the listening port


class NginxError(RuntimeError):
    pass


def _replace(pattern: str, repl: str, text: str, *, count: int = 1, flags: int = 0) -> str:
    """``re.subn`` that insists on exactly *count* replacements (the deployed file changed?)."""
    out, n = re.subn(pattern, repl, text, flags=flags)
    if n != count:
        raise NginxError(f"nginx.conf: {pattern!r} matched {n} times, expected {count}")
    return out


def local_config(conf: str, upstreams: Sequence[str], workdir: Path) -> str:
    """The deployed *conf* with its upstream servers replaced by *upstreams* (``host:port``),
    listening on ``{port}`` of 127.0.0.1, its files in *workdir*."""
    servers = re.findall(r"^(\s*)server \S+ resolve( [^;]*);\n", conf, re.M)
    if not servers:
        raise NginxError("nginx.conf: no `server NAME resolve …;` line in the upstream")
    indent, options = servers[0]
    lines = "".join(f"{indent}server {address}{options};\n" for address in upstreams)
    conf = _replace(r"^\s*server \S+ resolve [^;]*;\n", "", conf, count=len(servers), flags=re.M)
    conf = _replace(r"(hash \$study_uid consistent;\n)", rf"\1{lines}", conf)
    conf = _replace(r"^\s*resolver [^;]*;\n", "", conf, flags=re.M)
    conf = _replace(r"listen 8080;", f"listen 127.0.0.1:{_PORT};", conf)
    conf = _replace(r"worker_processes auto;", "worker_processes 1;", conf)
    conf = _replace(r"/tmp/", f"{workdir}/", conf, count=6)
    if os.getuid() == 0:  # the workers would run as nobody, who cannot enter pytest's tmp_path
        conf = "user root;\n" + conf
    return conf


@asynccontextmanager
async def open_nginx(workdir: Path, conf: str) -> AsyncIterator[str]:
    """Run nginx with *conf* (from :func:`local_config`) on a free loopback port; yield its URL.
    The access and error logs are ``workdir/nginx.log``."""
    if not await trio.Path(NGINX_BIN).exists():
        raise NginxError(f"{NGINX_BIN} is missing: run scripts/install-deps (installs nginx-light)")
    await trio.Path(workdir).mkdir(parents=True, exist_ok=True)
    log_path = workdir / "nginx.log"
    config = workdir / "nginx.conf"

    def command(port: int) -> list[str]:
        config.write_text(conf.replace(_PORT, str(port)))
        argv = [str(NGINX_BIN), "-p", str(workdir), "-e", str(log_path), "-c", str(config)]
        return [*argv, "-g", "daemon off;"]

    # stopped with SIGTERM: nginx's fast shutdown
    async with open_http_server(
        "nginx",
        command,
        log_path,
        probe="/nginx-healthz",
        error=NginxError,
    ) as url:
        yield url
