"""A PACS that accepts the association and then stops reading: rst must not wait for ever to
send it a data set (the send blocks once the socket buffers are full)."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from rst.backends.dimse.ul import AssociateRequest, PduReader, encode_associate_ac, negotiate
from rst.config import AeConfig
from tests.support.gateway import run_gateway, settled
from tests.support.sample import write_ct_study
from tests.support.stow import multipart

SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


async def deaf_pacs(
    associated: trio.Event, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        reader = PduReader(max_pdu_length=1 << 20)
        request = None
        while request is None:
            count = await stream.socket.recv_into(reader.writable())
            if count == 0:
                return
            reader.advance(count)
            request = reader.next_pdu()
        assert isinstance(request, AssociateRequest)
        results = negotiate(
            request,
            abstract_syntaxes={cx.abstract_syntax for cx in request.contexts},
            transfer_syntaxes=SYNTAXES,
        )
        await stream.send_all(
            encode_associate_ac(
                request,
                results,
                max_pdu_length=16384,
                implementation_class_uid="1.2.826.0.1.3680043.9.7433.1.99",
                implementation_version="DEAF",
                roles={},
            )
        )
        associated.set()
        await trio.sleep_forever()  # reads nothing more: the buffers fill up

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_stow_to_a_pacs_that_stops_reading_is_504_in_store_timeout(
    tmp_path: Path,
) -> None:
    study = write_ct_study(tmp_path, images=1, rows=2048, columns=2048)  # 8 MiB of pixels
    headers, body = multipart(study.paths[0].read_bytes())
    associated = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(deaf_pacs, associated)
        ae = AeConfig(aet="DEAF", host="127.0.0.1", port=port, store_timeout=0.5)
        async with (
            run_gateway(ae) as running,
            httpx.AsyncClient(base_url=f"{running.http_url}/aets/DEAF", timeout=30) as http,
        ):
            with trio.fail_after(10):
                response = await http.post("/studies", content=body, headers=headers)
            assert associated.is_set()
            assert response.status_code == 504
            assert "stopped reading" in response.json()["error"]
            await settled(running, "DEAF")
            assert (await http.get(f"{running.http_url}/aets")).status_code == 200
        nursery.cancel_scope.cancel()
