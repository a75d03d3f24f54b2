"""The errors rst raises. Each means one thing and carries the HTTP status it becomes.

One module (:mod:`rst.http.errors`) turns them into JSON responses; nothing else picks statuses.
"""

from __future__ import annotations

__all__ = [
    "ArchiveBusy",
    "AssociationBroken",
    "AssociationRejected",
    "AuthUnavailable",
    "BackendTimeout",
    "BadRequest",
    "DimseFailure",
    "Forbidden",
    "IncompleteRetrieve",
    "MoveDestinationUnknown",
    "NotAcceptable",
    "NotFound",
    "NotSupported",
    "PacsUnreachable",
    "PayloadTooLarge",
    "PeerProtocolError",
    "RequestHeadTooLarge",
    "RequestTimeout",
    "RstError",
    "StorageAccessError",
    "StorageError",
    "StorageUnreachable",
    "Unauthenticated",
    "UnknownAE",
    "UnreadableInstance",
    "UnsupportedMediaType",
    "UriTooLong",
]


class RstError(Exception):
    """Base of every error rst reports to a client."""

    status: int = 500
    retry_after: int | None = None
    """Seconds after which the client may try again (a ``Retry-After`` header), if it may."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RstError):
    """The request's parameters or body are malformed."""

    status = 400


class NotFound(RstError):
    """Nothing matched the request."""

    status = 404


class UnknownAE(NotFound):
    """The URL names an AE title that is not configured."""

    def __init__(self, aet: str) -> None:
        super().__init__(f"no archive is configured under the AE title {aet!r}; see GET /aets")
        self.aet = aet


class Unauthenticated(RstError):
    """No credentials, or credentials rst cannot accept (``[auth]``). *challenges* become the
    ``WWW-Authenticate`` headers of the 401."""

    status = 401

    def __init__(self, message: str, challenges: tuple[str, ...]) -> None:
        super().__init__(message)
        self.challenges = challenges


class Forbidden(RstError):
    """The caller is authenticated, and no grant of its roles allows this on this archive."""

    status = 403


class RequestTimeout(RstError):
    """The client stopped sending its request body for longer than ``http.body_timeout``."""

    status = 408


class NotAcceptable(RstError):
    """No representation rst can produce satisfies the Accept header."""

    status = 406


class PayloadTooLarge(RstError):
    """The request body exceeds ``http.max_stow_bytes``."""

    status = 413


class UriTooLong(RstError):
    """The request's target (path and query) exceeds ``http.max_url_bytes``."""

    status = 414


class RequestHeadTooLarge(RstError):
    """The request line and headers together exceed ``http.max_header_bytes``."""

    status = 431


class UnsupportedMediaType(RstError):
    """The request body has a Content-Type rst does not take here."""

    status = 415


class NotSupported(RstError):
    """The backend behind this AE does not offer the capability."""

    status = 501


class ArchiveBusy(RstError):
    """Every association slot of the archive stayed taken for ``queue_timeout`` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthUnavailable(RstError):
    """The identity provider's signing keys (``auth.jwks_url``) cannot be fetched, so no bearer
    token can be checked."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PacsUnreachable(RstError):
    """The TCP connection to the PACS failed."""

    status = 502


class AssociationRejected(RstError):
    """The PACS rejected or aborted association negotiation."""

    status = 502


class AssociationBroken(RstError):
    """The PACS aborted, released or dropped the association in the middle of an operation."""

    status = 502


class PeerProtocolError(RstError):
    """The PACS sent bytes that break the DICOM upper layer or DIMSE protocol (not DICOM at all,
    a PDU or command set that cannot be decoded, a message out of turn, a response without a
    Status)."""

    status = 502


class UnreadableInstance(RstError):
    """The archive sent an instance that rst cannot read as DICOM (to answer metadata, frames,
    bulk data or a rendered image, rst must parse it)."""

    status = 502


class MoveDestinationUnknown(RstError):
    """The PACS answered C-MOVE with 0xA801: it does not know rst's AE title."""

    status = 502


class DimseFailure(RstError):
    """The PACS answered a DIMSE request with a failure status."""

    status = 502

    def __init__(self, message: str, dimse_status: int | None = None) -> None:
        super().__init__(message)
        self.dimse_status = dimse_status


class IncompleteRetrieve(RstError):
    """Fewer instances arrived than the PACS reported (or the transfer broke off), or the PACS
    cancelled a retrieve or search on its own: what the client got is not all there is."""

    status = 502


class BackendTimeout(RstError):
    """The archive (a PACS, S3) did not answer within the configured timeout. Only silence is a
    timeout: an archive that answered wrongly or went away is a 502 error above."""

    status = 504


class StorageError(RstError):
    """Object storage (S3) failed a request; *code* is the S3 error code when there is one."""

    status = 502

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class StorageAccessError(StorageError):
    """The bucket cannot be used at all: bad credentials, access denied or no such bucket."""


class StorageUnreachable(StorageError):
    """The object storage endpoint could not be reached."""
