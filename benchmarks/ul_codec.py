"""Micro-benchmark of the sans-IO UL codec (rst.backends.dimse.ul): µs per operation.

    python -m benchmarks.ul_codec [--number N]

Compares with pynetdicom where it has an equivalent: building a C-STORE-RSP command set and
decoding a C-STORE-RQ command set.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from io import BytesIO

from rst.backends.dimse.ul import (
    CStoreRequest,
    PduReader,
    encode_c_store_rq,
    encode_c_store_rsp,
    encode_pdata,
    parse_command,
)
from rst.backends.dimse.ul.association import Association
from tests.support.ul_pair import accepted_acceptor

CT = "1.2.840.10008.5.1.4.1.1.2"
INSTANCE = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678"
EXPLICIT = "1.2.840.10008.1.2.1"
PDU_LENGTH = 128 * 1024


def per_op(function: Callable[[], object], number: int) -> float:
    """Best of five runs, in µs per call."""
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def _established(max_pdu: int) -> Association:
    """An acceptor with an accepted CT context, in the middle of a C-STORE's data set."""
    acceptor = accepted_acceptor(max_pdu=max_pdu, sop_class=CT, syntax=EXPLICIT, version="BENCH")
    command = encode_c_store_rq(message_id=1, sop_class_uid=CT, sop_instance_uid=INSTANCE)
    acceptor.receive_data(encode_pdata(1, True, True, command))
    acceptor.next_event()
    return acceptor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    number = parser.parse_args().number

    command = encode_c_store_rq(
        message_id=7, sop_class_uid=CT, sop_instance_uid=INSTANCE,
        move_originator_aet="ORTHANC", move_originator_message_id=3,
    )  # fmt: skip
    request = parse_command(command)
    assert isinstance(request, CStoreRequest)

    pdu = encode_pdata(1, False, False, bytes(PDU_LENGTH - 6))
    reader = PduReader(max_pdu_length=PDU_LENGTH)

    def read_pdu() -> object:
        # the service's loop: drain, recv_into(writable()), advance; one 128 KiB PDU per call
        target = reader.writable()
        target[: len(pdu)] = pdu  # stands in for recv_into (a memcpy of 128 KiB)
        reader.advance(len(pdu))
        return reader.next_pdu()

    def copy_only() -> None:
        target = reader.writable()
        target[: len(pdu)] = pdu

    association = _established(PDU_LENGTH)

    def association_pdu() -> object:
        # the same PDU through the Association: one DataFragment event, then NEED_DATA
        target = association.writable()
        target[: len(pdu)] = pdu
        association.advance(len(pdu))
        event = association.next_event()
        association.next_event()
        return event

    results = {
        "parse_command (C-STORE-RQ)": per_op(lambda: parse_command(command), number),
        "encode_c_store_rsp": per_op(lambda: encode_c_store_rsp(request, 0), number),
        "PduReader 128 KiB P-DATA (incl. 128 KiB copy in)": per_op(read_pdu, number // 10),
        "  of which the 128 KiB copy in": per_op(copy_only, number // 10),
        "Association 128 KiB P-DATA → DataFragment (same)": per_op(association_pdu, number // 10),
    }
    try:
        from pynetdicom.dimse_messages import C_STORE_RSP
        from pynetdicom.dimse_primitives import C_STORE
        from pynetdicom.dsutils import decode, encode
    except ImportError:  # pragma: no cover - pynetdicom is a dependency today
        pass
    else:

        def pynetdicom_rsp() -> bytes | None:
            primitive = C_STORE()
            primitive.MessageIDBeingRespondedTo = 7
            primitive.AffectedSOPClassUID = CT
            primitive.AffectedSOPInstanceUID = INSTANCE
            primitive.Status = 0
            message = C_STORE_RSP()
            message.primitive_to_message(primitive)
            return encode(message.command_set, True, True)

        results["pynetdicom: build + encode C-STORE-RSP"] = per_op(pynetdicom_rsp, number // 20)
        results["pynetdicom: decode C-STORE-RQ command set"] = per_op(
            lambda: decode(BytesIO(command), True, True), number // 20
        )

    width = max(map(len, results))
    for name, micros in results.items():
        print(f"{name:<{width}}  {micros:9.2f} µs")
    per_pdu = results["PduReader 128 KiB P-DATA (incl. 128 KiB copy in)"]
    print(f"{'PduReader throughput (incl. copy in)':<{width}}  {PDU_LENGTH / per_pdu:9.0f} MB/s")


if __name__ == "__main__":
    main()
