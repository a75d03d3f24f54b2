"""WADO-RS frames (PS3.18 §10.4.1.1.3): one instance from the archive, the frames asked for out.

The instance is retrieved alone (IMAGE level) and held whole while its frames are cut out of it
— or, where the archive reads parts of a stored instance (a large S3 object), only the frames
asked for are read (:mod:`rst.services.ranged`), and where the instance's frame layout is kept
with it (a cached file, :mod:`rst.dicom.layout`), only those frames' bytes are read and the
file is not parsed again (the cache derives it as it writes the instance, else the first frame
request keeps it); cutting, decoding and encoding run on a worker thread — except frames read
by ranges and sent as stored, which are mere slices, cut on trio's thread. Everything that can
fail — a frame beyond the last, a syntax rst cannot produce for this instance — fails before the
response starts, so the client gets a status and a message rather than a broken body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from rst.bridge import run_sync
from rst.dicom.accept import FrameChoice, FrameFormat, choose_frame_format
from rst.dicom.frames import Frame, FrameSource
from rst.dicom.layout import FRAMES, FrameLayout, derive
from rst.dicom.multipart import MultipartWriter
from rst.errors import NotFound
from rst.services.protocols import Backend, ByteRanges, Instance, RetrieveKeys, Sidecars
from rst.services.ranged import frame_source
from rst.services.wado import whole

__all__ = ["FramesAnswer", "retrieve_frames"]


@dataclass(frozen=True)
class FramesAnswer:
    """The frames to send, in the order asked, and how to label them."""

    format: FrameFormat
    frames: list[Frame]

    @property
    def part_type(self) -> str:
        """Every part's (or the single body's) ``Content-Type``."""
        return f"{self.format.media_type}; transfer-syntax={self.format.transfer_syntax}"

    @property
    def size(self) -> int:
        return sum(len(frame.data) for frame in self.frames)

    def parts(self, writer: MultipartWriter, location: Callable[[int], str]) -> Iterator[bytes]:
        """The ``multipart/related`` body: each frame with its head (``Content-Type`` first,
        then ``Content-Location`` from *location*), then the close delimiter."""
        for frame in self.frames:
            yield writer.part_head(self.part_type, {"Content-Location": location(frame.number)})
            yield frame.data
        yield writer.close()


async def retrieve_frames(
    backend: Backend, keys: RetrieveKeys, numbers: Sequence[int], choices: Sequence[FrameChoice]
) -> FramesAnswer:
    """The frames *numbers* of the instance *keys* names, in the first of *choices* (what the
    client accepts, most preferred first) that rst can produce for it.

    :raises NotFound: the archive has no such instance, or a frame does not exist.
    :raises NotAcceptable: none of *choices* can be produced for this instance.
    """
    if keys.sop_uid is None:
        raise ValueError("frames belong to one instance: keys must name a SOP instance")
    # A hint for the archive: what the client likes best (None, as stored, for "*").
    prefer = choices[0].transfer_syntax if choices else None
    held, data, derive_into = await _retrieve_one(backend, keys, prefer, numbers)
    if held is not None and derive_into is None:
        # Only the frames asked for were read: their source is made without parsing a file
        # (a fraction of a millisecond), so on trio's thread — as is the cutting, where the
        # frames go as stored (slices; no decoding): no trip to a worker thread, whose
        # handover costs more than that.
        source = held()
        source.check(numbers)
        fmt = choose_frame_format(choices, source.transfer_syntax, frames=len(numbers))
        if fmt.transfer_syntax == source.transfer_syntax:
            return FramesAnswer(fmt, source.frames(numbers, fmt.transfer_syntax))
        return await run_sync(
            lambda: FramesAnswer(fmt, source.frames(numbers, fmt.transfer_syntax))
        )

    def cut() -> FramesAnswer:
        source = held() if held is not None else FrameSource(data)
        if derive_into is not None:
            derive_into.save(FRAMES, derive(data, source))
        source.check(numbers)
        fmt = choose_frame_format(choices, source.transfer_syntax, frames=len(numbers))
        return FramesAnswer(fmt, source.frames(numbers, fmt.transfer_syntax))

    return await run_sync(cut)


Held = Callable[[], FrameSource]
"""What makes a source of the frames read by ranges (blocking: run in the same trip to a
worker thread as the cutting)."""


async def _retrieve_one(
    backend: Backend, keys: RetrieveKeys, prefer: str | None, numbers: Sequence[int]
) -> tuple[Held | None, bytes, Sidecars | None]:
    """The frames *numbers* of the instance *keys* names, held by a source (read by ranges),
    else the whole instance — and the sidecars its frame layout is to be derived into. The
    retrieve runs to its end (the archive's final status is checked); anything else it
    delivers is read and dropped."""
    found: tuple[Held | None, bytes, Sidecars | None] | None = None
    async with backend.retrieve(keys, prefer) as instances:
        async for received in instances:
            if found is None and received.sop_instance_uid == keys.sop_uid:
                found = await _prepare(received, numbers)
            elif received.ranges is None:
                await whole(received)
    if found is None:
        raise NotFound(f"the archive {backend.name} sent no instance {keys.sop_uid}")
    return found


async def _prepare(
    instance: Instance, numbers: Sequence[int]
) -> tuple[Held | None, bytes, Sidecars | None]:
    """Read what the frames *numbers* need, while *instance* is the retrieve's current one
    (a cached file is open only until then): by its frame layout where one is kept, by ranges
    where the archive reads parts, else whole."""
    sidecars = instance.sidecars
    ranges = sidecars.ranges if sidecars is not None else None
    if sidecars is not None and ranges is not None:
        kept = sidecars.peek(FRAMES)  # remembered: no trip to a worker thread
        if kept is None:
            kept = await run_sync(partial(sidecars.load, FRAMES))
        if kept is None:  # derived from this whole file, kept beside it
            return None, (await whole(instance)).data, sidecars
        layout = FrameLayout.from_json(kept)
        if layout is not None and layout.size == ranges.size:
            held = await _by_layout(layout, ranges, numbers)
            if held is not None:
                return held, b"", None
    if instance.ranges is not None:
        source = await frame_source(instance, numbers)
        if source is not None:
            return partial(_itself, source), b"", None
    return None, (await whole(instance)).data, None


def _itself(source: FrameSource) -> FrameSource:
    return source


async def _by_layout(
    layout: FrameLayout, ranges: ByteRanges, numbers: Sequence[int]
) -> Held | None:
    """What makes a source holding the frames *numbers*, each read by its ranges in the
    layout; ``None`` where a number is beyond the last frame (the whole file's source says
    so)."""
    wanted = sorted(set(numbers))
    if wanted[-1] > layout.number_of_frames:
        return None
    frames = {}
    for n in wanted:
        parts = [await ranges.read(start, length) for start, length in layout.spans(n)]
        frames[n] = parts[0] if len(parts) == 1 else b"".join(parts)
    return partial(layout.source, frames)
