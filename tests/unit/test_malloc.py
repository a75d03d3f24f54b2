"""rst.malloc: glibc's mmap threshold stays fixed, so large blocks go back when freed."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from rst.malloc import fix_mmap_threshold


def _glibc_with_mallinfo2() -> bool:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018
        libc.mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


glibc = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc 2.33 or later only")

# A fresh process: free a 4 MiB block (an association's read buffer), then allocate an
# instance-sized block; print whether it got its own mapping (mallinfo2's hblks went up).
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from rst.malloc import fix_mmap_threshold

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "fix":
        assert fix_mmap_threshold()
    buffer = bytearray(4 * 1024 * 1024)
    del buffer  # glibc's dynamic threshold: now 4 MiB, unless fixed
    mapped = libc.mallinfo2().hblks
    instance = bytes(512 * 1024)
    print(libc.mallinfo2().hblks - mapped)
    """
)


def _mapped_after_a_large_free(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* / GLIBC_TUNABLES from the caller
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PYTHONPATH": ":".join(p for p in sys.path if p)},
    )
    return int(done.stdout)


@glibc
def test_after_a_large_block_is_freed_a_large_block_is_still_mapped_on_its_own() -> None:
    assert _mapped_after_a_large_free("fix") == 1


@glibc
def test_without_the_fix_glibc_raises_the_threshold() -> None:
    """What the fix is for: the heap serves the block, and keeps it resident when freed."""
    assert _mapped_after_a_large_free("none") == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("MALLOC_MMAP_THRESHOLD_", "1048576"), ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=0")],
)
def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    assert fix_mmap_threshold() is False


def test_rst_fixes_it_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import rst.cli

    calls: list[str] = []

    def fix() -> bool:
        calls.append("fixed")
        return True

    monkeypatch.setattr(rst.cli, "fix_mmap_threshold", fix)

    async def command() -> None:
        calls.append("ran")

    assert rst.cli._run(command) == 0
    assert calls == ["fixed", "ran"]
