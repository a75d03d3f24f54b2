"""What ``/proc`` says about a process: memory, CPU time, threads, descriptors.

Every benchmark that watches rst reads it through here (one worker or several: a process with
``[http] workers > 1`` is a supervisor and its children, see :func:`tree`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tests.support.rst_process import child_pids

CLK_TCK = os.sysconf("SC_CLK_TCK")
TCP_STATES = {
    "01": "ESTABLISHED",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
}


def tree(pid: int) -> list[int]:
    """*pid* and its children (rst's workers, if it has some)."""
    return [pid, *child_pids(pid)]


def status(pid: int) -> dict[str, int]:
    """The numeric ``kB`` and count lines of ``/proc/<pid>/status`` (VmRSS, VmHWM, Threads...)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        first = value.split()[:1]
        if first and first[0].isdigit():
            out[name] = int(first[0])
    return out


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had."""
    return status(pid)["VmHWM"]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def snapshot(pid: int) -> dict[str, int]:
    """Resident and peak memory, threads and open descriptors of one process."""
    s = status(pid)
    return {
        "rss_kib": s["VmRSS"],
        "hwm_kib": s["VmHWM"],
        "threads": s["Threads"],
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def snapshot_tree(pid: int) -> dict[str, int]:
    """:func:`snapshot` summed over *pid* and its children."""
    total: dict[str, int] = {}
    for one in tree(pid):
        for key, value in snapshot(one).items():
            total[key] = total.get(key, 0) + value
    return total


def cpu_tree_s(pid: int) -> float:
    """:func:`cpu_s` summed over *pid* and its children."""
    return sum(cpu_s(one) for one in tree(pid))


def descriptors(pid: int, names: dict[int, str]) -> list[str]:
    """What each of the process's descriptors is: a file, or a TCP socket with its ports (named
    after *names*: port -> peer) and state."""
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                state = TCP_STATES.get(fields[3], fields[3])
                sockets[fields[9]] = (
                    f"tcp {names.get(local, local)} -> {names.get(remote, remote)} {state}"
                )
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        inode = link.removeprefix("socket:[").removesuffix("]")
        out.append(f"{fd}: {sockets.get(inode, link)}")
    return out
