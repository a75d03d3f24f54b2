"""WADO-URI (PS3.18 chapter 9): one instance from the archive, as a Part 10 file or rendered.

Both transactions name one instance by its study, series and SOP Instance UIDs; it is retrieved
alone (IMAGE level), and the retrieve runs to its end, so that the archive's final status is
checked. Retrieve DICOM Instance streams the file out as it arrives — a large instance is not
held whole — unless it must be re-encoded (:func:`~rst.services.wado.as_requested`, one
instance on a worker thread). Retrieve Rendered Instance goes through the pixel pipeline of the
WADO-RS rendered resources (:func:`~rst.dicom.render.render`), with the parameters mapped by
:class:`~rst.dicom.wado_uri.RenderedRequest`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from rst.bridge import run_sync
from rst.dicom.accept import RetrieveFormat
from rst.dicom.render import GIF, number_of_frames, render, require_pixels
from rst.dicom.wado_uri import RenderedRequest, transcodable
from rst.errors import BadRequest, NotAcceptable, NotFound
from rst.services.protocols import Backend, Instance, RetrieveKeys
from rst.services.rendered import render_source
from rst.services.wado import as_requested

__all__ = ["produce_instance", "render_instance"]

T = TypeVar("T")


async def produce_instance(
    backend: Backend,
    keys: RetrieveKeys,
    transfer_syntax: str | None,
    send: Callable[[tuple[bytes, ...]], Awaitable[None]],
) -> None:
    """Send the instance *keys* names as a Part 10 file, piece by piece: as the archive sent
    it (*transfer_syntax* ``None``, or the syntax it is stored in), else re-encoded.

    :raises NotFound: the archive has no such instance.
    :raises NotAcceptable: it cannot be sent in *transfer_syntax* (stored in a syntax rst
        cannot decode, or asked for in a compressed one rst cannot encode into).
    """

    async def stream(received: Instance) -> None:
        instance = await _in_syntax(received, transfer_syntax)
        await send((instance.data,))
        if instance.rest is not None:
            async for chunk in instance.rest:
                await send((chunk,))

    await _with_instance(backend, keys, transfer_syntax, stream)


async def render_instance(backend: Backend, keys: RetrieveKeys, wanted: RenderedRequest) -> bytes:
    """The image of the instance *keys* names, rendered as *wanted* says: its frame
    ``frameNumber``, else its first frame (every frame, animated, for a GIF).

    :raises NotFound: the archive has no such instance.
    :raises BadRequest: ``frameNumber`` is past the instance's last frame (PS3.18 §9.5.2).
    :raises NotAcceptable: the instance has no pixel data.
    :raises NotSupported: its pixel data cannot be decoded.
    """

    async def use(instance: Instance) -> bytes:
        source = await render_source(instance)  # a large stored one: its head, its frames
        ds = source.dataset
        require_pixels(ds)
        count = number_of_frames(ds)
        if wanted.frame is not None and wanted.frame > count:
            raise BadRequest(
                f"frameNumber={wanted.frame}, but the instance {keys.sop_uid} has {count} frame(s)"
            )
        if wanted.frame is not None:
            indices = [wanted.frame - 1]
        elif wanted.media_type == GIF:
            indices = list(range(count))
        else:
            indices = [0]
        rendering = wanted.rendering(int(ds.Rows), int(ds.Columns))
        holding, held = await source.holding(indices)
        return await run_sync(partial(render, holding, indices, rendering, held))

    return await _with_instance(backend, keys, None, use)


async def _in_syntax(instance: Instance, wanted: str | None) -> Instance:
    if wanted is None or wanted == instance.transfer_syntax:
        return instance
    if wanted not in transcodable():
        raise NotAcceptable(
            f"the instance {instance.sop_instance_uid} is stored in transfer syntax "
            f"{instance.transfer_syntax}, and rst cannot encode it in {wanted}: ask for "
            f"transferSyntax={instance.transfer_syntax}, * (as stored) or one of "
            f"{', '.join(sorted(transcodable()))}"
        )
    return await as_requested(instance, RetrieveFormat(wanted))


async def _with_instance(
    backend: Backend,
    keys: RetrieveKeys,
    prefer: str | None,
    use: Callable[[Instance], Awaitable[T]],
) -> T:
    """``use(instance)`` on the instance *keys* names as soon as it arrives; *use* reads it to
    its end. The retrieve runs on to its end, so the archive's final status is checked; anything
    else it delivers is read and dropped.

    :raises NotFound: the archive sent no such instance.
    """
    if keys.sop_uid is None:
        raise ValueError("WADO-URI names one instance: keys must name a SOP instance")
    results: list[T] = []
    async with backend.retrieve(keys, prefer) as instances:
        async for received in instances:
            if not results and received.sop_instance_uid == keys.sop_uid:
                results.append(await use(received))
            elif received.rest is not None:
                async for _ in received.rest:
                    pass
    if not results:
        raise NotFound(f"the archive {backend.name} sent no instance {keys.sop_uid}")
    return results[0]
