"""Who may call the C-STORE receiver: the configured archives, from where they are configured.

rst's receiver exists for the C-STOREs of its own C-MOVEs, which come from the PACS in
``[[aets]]``. Anyone else who reaches its port could only fill it with instances nobody asked
for (they are refused one by one) or hold its connections, so an association is accepted only
when the calling AE title is one an archive calls with (``store_calling_aets``, by default its
``called_aet``) and, where the archive says so (``store_from``), the peer's address is in one of its
networks. ``[dimse] accept_unknown_callers = true`` lets unknown AE titles in (not the
default: a decision written down); a known AE title is still held to its ``store_from``.

A refused caller gets an A-ASSOCIATE-RJ (PS3.8 Table 9-21): rejected-permanent, DICOM UL
service-user, calling-AE-title-not-recognized. An address that is not allowed has no reason
of its own in the table; for the acceptor, an AE title that calls from somewhere else is not
the AE it knows under that title, so the same reason is the closest, and the log says which.

No I/O here: :meth:`Callers.refusal` takes a title and an address and returns why not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rst.backends.dimse.ul.pdu import (
    Rejection,
    RejectResult,
    RejectSource,
    UserRejectReason,
)
from rst.config import AeConfig, Config

__all__ = ["REJECT_UNKNOWN_CALLER", "Callers"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

REJECT_UNKNOWN_CALLER: Rejection = (
    RejectResult.PERMANENT,
    RejectSource.SERVICE_USER,
    UserRejectReason.CALLING_AE_NOT_RECOGNIZED,
)
"""The A-ASSOCIATE-RJ ``(result, source, reason)`` of a caller that is not let in, for an
unknown AE title and for a known one calling from an address not allowed alike."""


@dataclass(frozen=True)
class Callers:
    """The calling AE titles the receiver accepts, each with the networks it may call from
    (``None``: from anywhere)."""

    allowed: Mapping[str, tuple[Network, ...] | None]
    accept_unknown: bool = False

    @classmethod
    def from_config(cls, config: Config) -> Callers:
        dimse_aes = [ae for ae in config.aets if isinstance(ae, AeConfig)]
        return cls.of(dimse_aes, accept_unknown=config.dimse.accept_unknown_callers)

    @classmethod
    def of(cls, aes: Iterable[AeConfig], *, accept_unknown: bool) -> Callers:
        allowed: dict[str, tuple[Network, ...] | None] = {}
        for ae in aes:
            networks = tuple(ipaddress.ip_network(item) for item in ae.store_from) or None
            for title in ae.callers:
                # a title two archives share: the union of where they may call from
                if title in allowed:
                    known = allowed[title]
                    networks = None if known is None or networks is None else known + networks
                allowed[title] = networks
        return cls(allowed, accept_unknown)

    def refusal(self, calling_aet: str, host: str) -> str | None:
        """Why the association from *calling_aet* at *host* is refused, or None to accept it."""
        if calling_aet not in self.allowed:
            if self.accept_unknown:
                return None
            return "calling AE title not configured in [[aets]] (store_calling_aets)"
        networks = self.allowed[calling_aet]
        if networks is None:
            return None
        try:
            address = ipaddress.ip_address(host.partition("%")[0])  # no IPv6 zone
        except ValueError:
            return "peer address unknown"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
        if any(address in network for network in networks):
            return None
        return "address not in the store_from of the AE title's [[aets]] entry"
