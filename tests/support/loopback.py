"""Keep servers that always bind the wildcard address (Orthanc 1.10, dcmtk's storescp) on loopback.

``loopback_preload(build_dir)`` compiles ``loopback.c`` (an LD_PRELOAD shim wrapping ``bind()``)
once per source version and returns the shared library to put in ``LD_PRELOAD``.

Also small helpers shared by the launchers: ``free_port``, ``stop_process``, ``log_tail``.

``listening_sockets(pid)`` reads ``/proc`` to list the TCP sockets a process listens on, so tests
can check that nothing listens on ``0.0.0.0`` or ``::``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

SOURCE = Path(__file__).with_name("loopback.c")

__all__ = [
    "SOURCE",
    "ListeningSocket",
    "default_build_dir",
    "free_port",
    "listening_sockets",
    "log_tail",
    "loopback_preload",
    "preload_env",
    "stop_process",
]


def loopback_preload(build_dir: Path) -> Path:
    """Build the bind() shim into ``build_dir`` (once per source hash) and return the .so path."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = build_dir / f"libloopback-{digest}.so"
    if target.is_file():
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is missing: run scripts/install-deps")
    build_dir.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name and rename: concurrent builders never see a partial file.
    fd, tmp_name = tempfile.mkstemp(prefix=".libloopback-", suffix=".so", dir=build_dir)
    os.close(fd)
    try:
        proc = subprocess.run(
            [gcc, "-shared", "-fPIC", "-O2", "-o", tmp_name, str(SOURCE), "-ldl"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed:\n{proc.stderr}")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


@dataclass(frozen=True)
class ListeningSocket:
    host: str  # "127.0.0.1", "0.0.0.0", "::1", "::", ...
    port: int

    @property
    def is_loopback(self) -> bool:
        return self.host.startswith("127.") or self.host in ("::1", "::ffff:127.0.0.1")


_TCP_LISTEN = "0A"


def _decode_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6 prints the address as four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr6 = ipaddress.IPv6Address(words)
    return str(addr6.ipv4_mapped) if addr6.ipv4_mapped else str(addr6)


def listening_sockets(pid: int) -> list[ListeningSocket]:
    """TCP sockets in LISTEN state owned by process ``pid`` (Linux /proc)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    result: list[ListeningSocket] = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != _TCP_LISTEN or inode not in inodes:
                continue
            host_hex, port_hex = local.split(":")
            result.append(ListeningSocket(_decode_address(host_hex), int(port_hex, 16)))
    return sorted(result, key=lambda s: (s.port, s.host))


def default_build_dir() -> Path:
    """Where support code caches what it builds: outside the work tree, per user."""
    return Path(tempfile.gettempdir()) / f"rst-test-build-{os.getuid()}"


def preload_env(preload: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) with ``preload`` first in LD_PRELOAD, and
    TCP_NODELAY=1."""
    env = dict(os.environ if base is None else base)
    previous = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{preload}:{previous}" if previous else str(preload)
    env["TCP_NODELAY"] = "1"
    return env


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, then close).

    Racy by nature: launchers that use it retry with fresh ports when the server fails to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


async def stop_process(proc: trio.Process, *, grace: float = 10.0, kill: bool = False) -> None:
    """Stop ``proc``: SIGTERM, wait up to ``grace`` s, then SIGKILL (``kill=True``: at once).

    Shielded from cancellation, so it is safe in ``finally`` blocks of cancelled tasks.
    """
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
                with trio.move_on_after(grace):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
        await proc.wait()
