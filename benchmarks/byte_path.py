"""Micro-benchmark of a retrieve's hot path in rst: producer → byte channel → multipart
framing → response body → a null sink (no sockets, no quart). CPU seconds per run.

    python -m benchmarks.byte_path [--gib G] [--runs N]

The producer sends the data in 64 KiB pieces (a PACS's fragments), a part head every 16 MiB
(an instance), through :func:`~rst.http.multipart_body.start_multipart` with the production
bounds; the consumer takes each chunk and drops it. Printed: min, median and max of
``time.process_time`` over the runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio

from rst.http.multipart_body import PartSender, start_multipart

PIECE = 64 << 10
INSTANCE = 16 << 20


async def one_run(total: int) -> tuple[float, int]:
    """CPU seconds to stream *total* bytes, and the bytes the sink got."""
    piece = bytes(PIECE)

    async def produce(parts: PartSender) -> None:
        for offset in range(0, total, PIECE):
            if offset % INSTANCE == 0:
                await parts.part("application/dicom", piece)
            else:
                await parts.more(piece)

    received = 0
    async with trio.open_nursery() as nursery:
        start = time.process_time()
        started = await start_multipart(nursery, produce)
        async for chunk in started.body:
            received += len(chunk)
        elapsed = time.process_time() - start
    return elapsed, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="data per run (GiB)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    total = int(args.gib * (1 << 30)) // PIECE * PIECE
    times = []
    for _ in range(args.runs):
        elapsed, received = trio.run(one_run, total)
        if received < total:
            raise SystemExit(f"the sink got {received} of {total} bytes")
        times.append(elapsed)
    print(
        f"{total / (1 << 30):g} GiB in 64 KiB pieces: CPU s min {min(times):.3f}, "
        f"median {statistics.median(times):.3f}, max {max(times):.3f}"
    )


if __name__ == "__main__":
    main()
