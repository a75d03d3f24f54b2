"""The cross-process locks of the retrieve cache (:mod:`rst.cache.locks`): one holder at a time,
nothing left behind by a release or by a holder that was killed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rst.cache.locks import Locks
from rst.services.protocols import RetrieveKeys

ARCHIVE = "PACS@127.0.0.1:104"
SERIES = RetrieveKeys("1.2.3", "1.2.3.4")


def test_one_holder_at_a_time_and_release_removes_the_file(tmp_path: Path) -> None:
    locks = Locks(tmp_path)
    held = locks.hold(ARCHIVE, SERIES)
    assert held is not None
    assert locks.hold(ARCHIVE, SERIES) is None  # another open file: as another process
    assert locks.held_elsewhere(ARCHIVE, SERIES)
    assert not locks.held_elsewhere(ARCHIVE, RetrieveKeys("1.2.3"))  # the study is another key
    assert not locks.held_elsewhere("OTHER@127.0.0.1:104", SERIES)  # and another archive

    held.release()
    held.release()  # idempotent
    assert not locks.held_elsewhere(ARCHIVE, SERIES)
    assert list(locks.folder.iterdir()) == []
    again = locks.hold(ARCHIVE, SERIES)
    assert again is not None
    again.release()


def test_a_killed_holder_leaves_nothing_held(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from rst.cache.locks import Locks; "
            "from rst.services.protocols import RetrieveKeys; "
            f"held = Locks(Path({str(tmp_path)!r})).hold({ARCHIVE!r}, RetrieveKeys('1.2.3', "
            "'1.2.3.4')); print('held' if held else 'not held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],  # the checkout, where ``rst`` is imported from
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        locks = Locks(tmp_path)
        assert locks.held_elsewhere(ARCHIVE, SERIES)
        assert locks.hold(ARCHIVE, SERIES) is None
    finally:
        holder.kill()
        holder.wait(timeout=20)
        if holder.stdin is not None:
            holder.stdin.close()
        if holder.stdout is not None:
            holder.stdout.close()

    assert not locks.held_elsewhere(ARCHIVE, SERIES)  # its file stays, but nothing holds it
    held = locks.hold(ARCHIVE, SERIES)
    assert held is not None
    held.release()
