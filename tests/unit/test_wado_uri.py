"""WADO-URI requests (rst.dicom.wado_uri): which transaction a query string asks for, with what
parameters, and every way a query is refused (400, 406, 501) before any archive is asked."""

from __future__ import annotations

import re

import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from rst.dicom.render_params import GIF, JPEG, PNG, Region, Rendering, Viewport, Window
from rst.dicom.wado_uri import (
    DICOM,
    DicomRequest,
    RenderedRequest,
    SourceRegion,
    negotiate_uri,
    parse_wado_uri,
)
from rst.errors import BadRequest, NotAcceptable, NotSupported, RstError

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
UIDS = [("requestType", "WADO"), ("studyUID", STUDY), ("seriesUID", SERIES), ("objectUID", SOP)]
OHIF_FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8"
)


def parse(*extra: tuple[str, str], accept: str | None = None) -> DicomRequest | RenderedRequest:
    return parse_wado_uri([*UIDS, *extra], accept)


def rendered(*extra: tuple[str, str], accept: str | None = None) -> RenderedRequest:
    request = parse(*extra, accept=accept)
    assert isinstance(request, RenderedRequest)
    return request


# -- the two transactions -------------------------------------------------------------------------


def test_without_content_type_a_jpeg_of_the_first_frame() -> None:
    """PS3.18 §9.3: no contentType and Accept */* (or none) is Retrieve Rendered, image/jpeg."""
    for accept in (None, "*/*", BROWSER_ACCEPT):
        assert parse(accept=accept) == RenderedRequest(STUDY, SERIES, SOP)
    assert rendered().rendering(40, 60) == Rendering(JPEG, 90, None, None)


def test_ohif_wadouri_request_is_the_instance_as_stored() -> None:
    """OHIF's loader: contentType=application/dicom&transferSyntax=* with an Accept for frames;
    contentType replaces the header."""
    request = parse(
        ("contentType", "application/dicom"),
        ("transferSyntax", "*"),
        accept=OHIF_FRAMES_ACCEPT,
    )
    assert request == DicomRequest(STUDY, SERIES, SOP, transfer_syntax=None)


def test_dicom_defaults_to_explicit_vr_little_endian() -> None:
    """PS3.18 §9.4.2.4: without transferSyntax, the default syntax of web services."""
    request = parse(("contentType", DICOM))
    assert request == DicomRequest(STUDY, SERIES, SOP, str(ExplicitVRLittleEndian))
    assert parse(accept=DICOM) == request  # the Accept header, when there is no contentType


@pytest.mark.parametrize(
    "syntax",
    [str(ExplicitVRLittleEndian), str(RLELossless), str(JPEGBaseline8Bit), " 1.2.840.10008.1.2.5 "],
)
def test_transfer_syntaxes_rst_may_send(syntax: str) -> None:
    """Explicit VR LE and the encodable ones always; a compressed one rst cannot encode into
    passes too (decided once the instance has arrived: it may be stored so)."""
    request = parse(("contentType", DICOM), ("transferSyntax", syntax))
    assert isinstance(request, DicomRequest)
    assert request.transfer_syntax == syntax.strip()


@pytest.mark.parametrize(
    ("syntax", "error", "message"),
    [
        (str(ImplicitVRLittleEndian), NotAcceptable, "Implicit VR Little Endian"),
        (str(ExplicitVRBigEndian), NotAcceptable, "Big Endian"),
        ("1.2.3.4", NotAcceptable, "not a transfer syntax rst knows"),
        ("JPEG", BadRequest, "invalid transfer syntax UID"),
        ("1.2.840.10008.1.2.4.50\\1.2.840.10008.1.2.1", BadRequest, "invalid transfer syntax"),
        ("", BadRequest, "invalid transfer syntax UID"),
    ],
)
def test_transfer_syntaxes_refused(syntax: str, error: type[RstError], message: str) -> None:
    with pytest.raises(error, match=message):
        parse(("contentType", DICOM), ("transferSyntax", syntax))


# -- media types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "accept", "chosen"),
    [
        ("image/png", None, PNG),
        ("image/gif", DICOM, GIF),  # contentType replaces Accept
        ("image/png,application/dicom", None, PNG),
        ("application/dicom;q=0.5, image/gif", None, GIF),
        ("image/*", None, JPEG),
        ("image/*, image/jpeg;q=0", None, PNG),
        ("application/*", None, DICOM),
        ("application/dicom+xml, image/png;q=0.2", None, PNG),
        (None, "image/png", PNG),
        ("", "image/gif", GIF),
        (None, BROWSER_ACCEPT, JPEG),
    ],
)
def test_negotiation(content_type: str | None, accept: str | None, chosen: str) -> None:
    assert negotiate_uri(content_type, accept) == chosen


@pytest.mark.parametrize(
    ("content_type", "accept"),
    [
        ("application/dicom+xml", None),
        ("text/html", "*/*"),
        ("image/jp2", None),
        ("video/mpeg", None),
        ('multipart/related; type="application/dicom"', None),
        ("application/dicom;q=0", None),
        (None, OHIF_FRAMES_ACCEPT),
    ],
)
def test_media_types_rst_does_not_produce_are_406(
    content_type: str | None, accept: str | None
) -> None:
    with pytest.raises(NotAcceptable, match="image/jpeg, image/png, image/gif, application/dicom"):
        negotiate_uri(content_type, accept)


def test_transfer_syntax_media_type_parameter_is_refused() -> None:
    """PS3.18 §8.7.3.5.2: forbidden in the URI service; transferSyntax says it."""
    with pytest.raises(BadRequest, match="transferSyntax"):
        parse(("contentType", "application/dicom; transfer-syntax=1.2.840.10008.1.2.5"))


# -- rendering parameters -----------------------------------------------------------------------


def test_rendering_parameters_map_onto_the_rendered_pipeline() -> None:
    request = rendered(
        ("contentType", "image/png"),
        ("frameNumber", "3"),
        ("rows", "100"),
        ("columns", "200"),
        ("windowCenter", "-600.5"),
        ("windowWidth", "1500"),
        ("imageQuality", "70"),
        ("annotation", "patient,technique"),  # ignored: rst burns no text into images
        ("imageAnnotation", "anything"),
        ("charset", "utf-8"),
        ("frame", "7"),  # not a parameter of the service (Cornerstone's own): ignored
    )
    assert request.frame == 3
    window = Window(-600.5, 1500.0, "LINEAR")
    assert request.rendering(512, 512) == Rendering(PNG, 70, Viewport(200, 100), window)


def test_rows_or_columns_alone_fit_that_side() -> None:
    assert rendered(("rows", "64")).rendering(512, 256).viewport == Viewport(None, 64)
    assert rendered(("columns", "64")).rendering(512, 256).viewport == Viewport(64, None)


def test_region_becomes_pixels_of_the_image() -> None:
    """Relative coordinates (PS3.18 §9.5.1.2.5) become the viewport's source region once the
    image's size is known; without rows/columns the region keeps its own size."""
    request = rendered(("region", "0.25,0.5,0.75,1.0"))
    assert request.region == SourceRegion(0.25, 0.5, 0.75, 1.0)
    assert request.rendering(40, 60).viewport == Viewport(30, 20, Region(15, 20, 30, 20))
    scaled = rendered(("region", "0,0,0.5,0.5"), ("columns", "300"))
    assert scaled.rendering(40, 60).viewport == Viewport(300, None, Region(0, 0, 30, 20))


def test_region_keeps_every_pixel_it_touches() -> None:
    region = SourceRegion(0.999, 0.0, 1.0, 0.001)
    assert region.pixels(40, 60) == Region(59, 0, 1, 1)
    assert SourceRegion(0.1, 0.1, 0.2, 0.2).pixels(7, 7) == Region(0, 0, 2, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ((("frameNumber", "0"),), "frameNumber must be a frame number"),
        ((("frameNumber", "-1"),), "frameNumber"),
        ((("frameNumber", "2,3"),), "frameNumber"),
        ((("frameNumber", "1234567890"),), "frameNumber"),
        ((("rows", "0"),), "rows must be an integer from 1 to 8192"),
        ((("columns", "8193"),), "columns must be an integer"),
        ((("rows", "²"),), "rows must be"),
        ((("region", "0,0,1"),), "region must be four decimals"),
        ((("region", "0,0,1,nan"),), "decimal number"),
        ((("region", "0,0,1.5,1"),), "from 0.0 to 1.0"),
        ((("region", "0.5,0,0.5,1"),), "right of its left"),
        ((("region", "0,0.8,1,0.2"),), "bottom below its top"),
        ((("windowCenter", "40"),), "windowCenter needs windowWidth"),
        ((("windowWidth", "400"),), "windowWidth needs windowCenter"),
        ((("windowCenter", "40"), ("windowWidth", "0.5")), "at least 1"),
        ((("windowCenter", "inf"), ("windowWidth", "400")), "windowCenter must be a decimal"),
        ((("imageQuality", "101"),), "imageQuality must be an integer from 1 to 100"),
        ((("transferSyntax", str(ExplicitVRLittleEndian)),), "transferSyntax applies to"),
        ((("rows", "10"), ("rows", "20")), "rows parameter is given more than once"),
    ],
)
def test_malformed_rendering_parameters_are_400(
    params: tuple[tuple[str, str], ...], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        parse(*params)


def test_rendering_parameters_are_ignored_for_the_dicom_file() -> None:
    """They belong to Retrieve Rendered Instance; Retrieve DICOM Instance has none of them."""
    request = parse(("contentType", DICOM), ("rows", "0"), ("frameNumber", "x"))
    assert request == DicomRequest(STUDY, SERIES, SOP)


def test_what_rst_does_not_do_is_refused_not_ignored() -> None:
    """De-identification and presentation states change what the client gets: silently
    ignoring them would hand out patient data, or another image than asked for."""
    with pytest.raises(NotSupported, match="anonymize"):
        parse(("contentType", DICOM), ("anonymize", "yes"))
    with pytest.raises(NotSupported, match="presentationUID"):
        parse(("presentationUID", "1.2.3.9"))
    with pytest.raises(NotSupported, match="presentationSeriesUID"):
        parse(("presentationSeriesUID", "1.2.3.9"))


# -- the instance -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("studyUID", STUDY), ("seriesUID", SERIES), ("objectUID", SOP)], "requestType=WADO"),
        ([*UIDS[:1], ("requestType", "wado"), *UIDS[1:]], "given more than once"),
        ([("requestType", "wado"), *UIDS[1:]], "requestType must be WADO, not 'wado'"),
        ([("requestType", "WADO-RS"), *UIDS[1:]], "requestType must be WADO"),
        ([*UIDS[:3]], "needs objectUID"),
        ([UIDS[0], UIDS[2], UIDS[3]], "needs studyUID"),
        ([UIDS[0], ("studyuid", STUDY), UIDS[2], UIDS[3]], "needs studyUID"),  # case counts
        ([*UIDS[:3], ("objectUID", "1.2.3\\1.2.4")], "invalid SOP instance UID"),
        ([UIDS[0], ("studyUID", "1.2.*"), *UIDS[2:]], "invalid study UID"),
        ([*UIDS[:2], ("seriesUID", ""), UIDS[3]], "invalid series UID"),
        ([*UIDS[:2], ("seriesUID", "1." * 40 + "1"), UIDS[3]], "invalid series UID"),
        ([*UIDS, ("studyUID", STUDY)], "studyUID parameter is given more than once"),
        ([*UIDS, ("contentType", DICOM), ("contentType", DICOM)], "contentType parameter"),
    ],
)
def test_request_type_and_uids(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        parse_wado_uri(params)
