"""Content negotiation: Accept parsing, WADO-RS instance formats, DICOM JSON."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rst.dicom.accept import (
    MAX_MEDIA_RANGES,
    FrameChoice,
    FrameFormat,
    MediaRange,
    RetrieveFormat,
    choose_frame_format,
    negotiate_frames,
    negotiate_instances,
    negotiate_json,
    parse_accept,
    parse_media_type,
    split_quoted,
)
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN
from rst.errors import BadRequest, NotAcceptable, RstError

EVLE = EXPLICIT_VR_LITTLE_ENDIAN
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
OHIF_FRAMES_QUOTED = 'multipart/related; type="application/octet-stream"; transfer-syntax="*"'
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
OCTET = "application/octet-stream"

_TOKENS = [
    "application/dicom",
    "application/dicom+json",
    "application/json",
    "application/octet-stream",
    "multipart/related",
    "image/jpeg",
    "image/jls",
    "*/*",
    "image/*",
    "type=application/dicom",
    'type="application/octet-stream"',
    "transfer-syntax=*",
    'transfer-syntax="1.2.840.10008.1.2.4.50"',
    "transfer-syntax=1.2.840.10008.1.2.1",
    "q=0",
    "q=0.5",
    "q=1.0001",
    "q=-1",
    "q=",
    ";",
    ",",
    '"',
    "\\",
    "=",
    " ",
    "/",
    "\x00",
    "\u00e9",
]


def hostile_accepts() -> st.SearchStrategy[str]:
    """Accept values made of the pieces real ones are made of, in any order, and noise."""
    pieces = st.lists(st.sampled_from(_TOKENS) | st.text(max_size=8), max_size=60)
    return pieces.map("".join) | st.text(max_size=300)


class TestParseAccept:
    def test_simple_list(self) -> None:
        ranges = parse_accept("application/dicom+json, */*")
        assert [r.media_type for r in ranges] == ["application/dicom+json", "*/*"]
        assert all(r.q == 1.0 for r in ranges)

    def test_quoted_and_unquoted_params_are_equal(self) -> None:
        quoted = parse_accept('multipart/related; type="application/dicom"')[0]
        token = parse_accept("multipart/related; type=application/dicom")[0]
        assert quoted == token
        assert quoted.params == {"type": "application/dicom"}

    def test_case_and_whitespace(self) -> None:
        (r,) = parse_accept('  Multipart/Related ;TYPE = "application/dicom" ;  Q=0.5 ')
        assert r == MediaRange("multipart", "related", {"type": "application/dicom"}, 0.5)

    def test_comma_inside_quotes_does_not_split(self) -> None:
        ranges = parse_accept('multipart/related; type="a,b"; x="q\\"uote", text/plain')
        assert len(ranges) == 2
        assert ranges[0].params == {"type": "a,b", "x": 'q"uote'}

    def test_q_ends_media_type_params(self) -> None:
        (r,) = parse_accept("text/html; level=1; q=0.7; ext=1")
        assert r.params == {"level": "1"}
        assert r.q == pytest.approx(0.7)

    @pytest.mark.parametrize(
        "bad", ["nonsense", "/json", "application/", "text/html; q=2", "a/b; q=x"]
    )
    def test_malformed_elements_are_skipped(self, bad: str) -> None:
        assert parse_accept(f"{bad}, application/json") == [MediaRange("application", "json")]

    def test_empty(self) -> None:
        assert parse_accept("") == []
        assert parse_accept(" , ,") == []

    def test_split_quoted_and_parse_media_type(self) -> None:
        assert split_quoted('a;"b;c";d', ";") == ["a", '"b;c"', "d"]
        assert parse_media_type('Multipart/Related; Boundary="x y"; type=application/dicom') == (
            "multipart/related",
            {"boundary": "x y", "type": "application/dicom"},
        )
        assert parse_media_type("") == ("", {})


class TestNegotiateInstances:
    @pytest.mark.parametrize(
        "accept",
        [
            None,
            "",
            "*/*",
            "multipart/*",
            "multipart/related",
            'multipart/related; type="application/dicom"',
            "multipart/related; type=application/dicom",
            "MULTIPART/RELATED; TYPE=APPLICATION/DICOM",
            f"multipart/related; type=application/dicom; transfer-syntax={EVLE}",
            f'multipart/related; type="application/dicom"; transfer-syntax="{EVLE}"',
        ],
    )
    def test_default_explicit_vr_little_endian(self, accept: str | None) -> None:
        assert negotiate_instances(accept) == RetrieveFormat(EVLE)

    def test_as_stored(self) -> None:
        fmt = negotiate_instances('multipart/related; type="application/dicom"; transfer-syntax=*')
        assert fmt == RetrieveFormat(None)
        assert negotiate_instances("multipart/related; transfer-syntax=*").transfer_syntax is None

    @pytest.mark.parametrize(
        "accept",
        [
            "application/dicom+json",
            "application/dicom",
            OHIF_FRAMES,
            "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50",
            "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2",
            "multipart/related; type=application/dicom+xml",
            "*/*; q=0",
            "image/jpeg, text/html",
        ],
    )
    def test_not_acceptable(self, accept: str) -> None:
        with pytest.raises(NotAcceptable) as info:
            negotiate_instances(accept)
        assert 'type="application/dicom"' in info.value.message
        assert EVLE in info.value.message
        assert info.value.status == 406

    def test_acceptable_range_alongside_ohif_frames(self) -> None:
        accept = f"{OHIF_FRAMES}, multipart/related; type=application/dicom; transfer-syntax=*"
        assert negotiate_instances(accept).transfer_syntax is None

    def test_highest_q_wins(self) -> None:
        accept = (
            "multipart/related; type=application/dicom; q=0.5, "
            "multipart/related; type=application/dicom; transfer-syntax=*; q=0.9"
        )
        assert negotiate_instances(accept).transfer_syntax is None
        swapped = (
            "multipart/related; type=application/dicom; q=0.9, "
            "multipart/related; type=application/dicom; transfer-syntax=*; q=0.5"
        )
        assert negotiate_instances(swapped).transfer_syntax == EVLE

    def test_equal_q_keeps_client_order(self) -> None:
        accept = "multipart/related; transfer-syntax=*, multipart/related"
        assert negotiate_instances(accept).transfer_syntax is None

    def test_unsupported_syntax_falls_back_to_lower_q(self) -> None:
        accept = (
            f"multipart/related; type=application/dicom; transfer-syntax={JPEG_BASELINE},"
            " */*; q=0.1"
        )
        assert negotiate_instances(accept).transfer_syntax == EVLE

    @pytest.mark.parametrize("syntax", [JLS, J2K, RLE])
    def test_lossless_compressed_targets_are_transcoded(self, syntax: str) -> None:
        accept = f'multipart/related; type="application/dicom"; transfer-syntax="{syntax}"'
        assert negotiate_instances(accept) == RetrieveFormat(syntax)

    def test_message_names_the_syntaxes_rst_encodes(self) -> None:
        with pytest.raises(NotAcceptable) as info:
            negotiate_instances(
                f"multipart/related; type=application/dicom; transfer-syntax={JPEG_BASELINE}"
            )
        for syntax in (JLS, J2K, RLE):
            assert syntax in info.value.message

    def test_q0_excludes_default_from_wildcard(self) -> None:
        accept = "multipart/related; type=application/dicom; q=0, */*"
        with pytest.raises(NotAcceptable):
            negotiate_instances(accept)

    def test_query_parameter_takes_precedence(self) -> None:
        param = "multipart/related; type=application/dicom; transfer-syntax=*"
        assert negotiate_instances("application/dicom+json", param).transfer_syntax is None
        with pytest.raises(NotAcceptable):
            negotiate_instances("*/*", "application/dicom+json")

    def test_blank_query_parameter_is_ignored(self) -> None:
        assert negotiate_instances("*/*", "  ").transfer_syntax == EVLE


class TestNegotiateFrames:
    @pytest.mark.parametrize("accept", [OHIF_FRAMES, OHIF_FRAMES_QUOTED])
    def test_ohif_forms_mean_as_stored(self, accept: str) -> None:
        assert negotiate_frames(accept) == (FrameChoice(OCTET, None),)

    @pytest.mark.parametrize(
        "accept",
        [
            None,
            "",
            "*/*",
            "multipart/*",
            "multipart/related",
            "multipart/related; type=application/octet-stream",
            f'multipart/related; type="application/octet-stream"; transfer-syntax="{EVLE}"',
            'multipart/related; type="*/*"',  # dicomweb-client's default
        ],
    )
    def test_default_is_explicit_vr_little_endian(self, accept: str | None) -> None:
        assert negotiate_frames(accept) == (FrameChoice(OCTET, EVLE),)

    @pytest.mark.parametrize(
        ("accept", "expected"),
        [
            ("multipart/related; type=image/jls", FrameChoice("image/jls", JLS)),
            ("multipart/related; type=image/x-jls", FrameChoice("image/jls", JLS)),
            ('multipart/related; type="image/jp2"', FrameChoice("image/jp2", J2K)),
            ("multipart/related; type=image/dicom-rle", FrameChoice("image/dicom-rle", RLE)),
            (
                "multipart/related; type=image/jpeg",
                FrameChoice("image/jpeg", "1.2.840.10008.1.2.4.70"),
            ),
            (
                f"multipart/related; type=image/jpeg; transfer-syntax={JPEG_BASELINE}",
                FrameChoice("image/jpeg", JPEG_BASELINE),
            ),
            (
                "multipart/related; type=image/jpeg; transfer-syntax=*",
                FrameChoice("image/jpeg", None),
            ),
            ("application/octet-stream", FrameChoice(OCTET, EVLE, multipart=False)),
            ("image/jls; transfer-syntax=*", FrameChoice("image/jls", None, multipart=False)),
        ],
    )
    def test_bulk_media_types(self, accept: str, expected: FrameChoice) -> None:
        assert negotiate_frames(accept) == (expected,)

    def test_preference_order_with_q_values(self) -> None:
        accept = (
            f"multipart/related; type=application/octet-stream; q=0.5, "
            f"multipart/related; type=image/jls; transfer-syntax={JLS}; q=0.9, "
            f"{OHIF_FRAMES}"
        )
        assert negotiate_frames(accept) == (
            FrameChoice(OCTET, None),
            FrameChoice("image/jls", JLS),
            FrameChoice(OCTET, EVLE),
        )

    def test_q0_refuses(self) -> None:
        accept = "multipart/related; type=application/octet-stream; q=0, */*"
        with pytest.raises(NotAcceptable):
            negotiate_frames(accept)

    @pytest.mark.parametrize(
        "accept",
        [
            "application/dicom",
            "application/dicom+json",
            "multipart/related; type=application/dicom",
            "image/png",
            "multipart/related; type=video/mp4",
            f"multipart/related; type=image/jls; transfer-syntax={J2K}",  # not a JPEG-LS syntax
            "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2",
            f"multipart/related; type=application/octet-stream; transfer-syntax={JLS}",
        ],
    )
    def test_not_acceptable(self, accept: str) -> None:
        with pytest.raises(NotAcceptable) as info:
            negotiate_frames(accept)
        assert info.value.status == 406
        assert 'type="application/octet-stream"' in info.value.message

    def test_query_parameter_takes_precedence(self) -> None:
        assert negotiate_frames("application/dicom", OHIF_FRAMES) == (FrameChoice(OCTET, None),)


class TestChooseFrameFormat:
    ohif = (FrameChoice(OCTET, None),)
    default = (FrameChoice(OCTET, EVLE),)

    @pytest.mark.parametrize(
        ("stored", "expected"),
        [
            (EVLE, FrameFormat(OCTET, EVLE)),
            (JLS, FrameFormat("image/jls", JLS)),
            (J2K, FrameFormat("image/jp2", J2K)),
            (RLE, FrameFormat("image/dicom-rle", RLE)),
            (JPEG_BASELINE, FrameFormat("image/jpeg", JPEG_BASELINE)),
        ],
    )
    def test_as_stored_labels_with_the_stored_media_type(
        self, stored: str, expected: FrameFormat
    ) -> None:
        assert choose_frame_format(self.ohif, stored, frames=1) == expected

    @pytest.mark.parametrize("stored", [EVLE, JLS, JPEG_BASELINE])
    def test_default_decompresses(self, stored: str) -> None:
        assert choose_frame_format(self.default, stored, frames=3) == FrameFormat(OCTET, EVLE)

    def test_transcoding_needs_an_encoder(self) -> None:
        choices = (FrameChoice("image/jp2", J2K),)
        assert choose_frame_format(choices, EVLE, frames=1) == FrameFormat("image/jp2", J2K)
        assert choose_frame_format(choices, J2K, frames=1, encodable=()) == FrameFormat(
            "image/jp2", J2K
        )
        with pytest.raises(NotAcceptable) as info:
            choose_frame_format(choices, EVLE, frames=1, encodable=())
        assert EVLE in info.value.message

    def test_lossy_targets_are_refused_unless_stored(self) -> None:
        choices = (FrameChoice("image/jpeg", JPEG_BASELINE),)
        with pytest.raises(NotAcceptable):
            choose_frame_format(choices, EVLE, frames=1)
        jpeg = FrameFormat("image/jpeg", JPEG_BASELINE)
        assert choose_frame_format(choices, JPEG_BASELINE, frames=1) == jpeg

    def test_first_producible_choice_wins(self) -> None:
        choices = (
            FrameChoice("image/jpeg", JPEG_BASELINE),
            FrameChoice("image/jls", None),
            FrameChoice(OCTET, EVLE),
        )
        assert choose_frame_format(choices, J2K, frames=1) == FrameFormat(OCTET, EVLE)
        assert choose_frame_format(choices, JLS, frames=1) == FrameFormat("image/jls", JLS)

    def test_single_part_for_one_frame_only(self) -> None:
        single = (FrameChoice(OCTET, EVLE, multipart=False),)
        fmt = choose_frame_format(single, EVLE, frames=1)
        assert fmt == FrameFormat(OCTET, EVLE, multipart=False)
        with pytest.raises(NotAcceptable, match="single part"):
            choose_frame_format(single, EVLE, frames=2)
        fallback = (*single, FrameChoice(OCTET, None))
        assert choose_frame_format(fallback, EVLE, frames=2) == FrameFormat(OCTET, EVLE)

    def test_video_is_not_cut_into_frames(self) -> None:
        with pytest.raises(NotAcceptable, match="video"):
            choose_frame_format(self.ohif, "1.2.840.10008.1.2.4.102", frames=1)


class TestNegotiateJson:
    @pytest.mark.parametrize(
        ("accept", "expected"),
        [
            (None, "application/dicom+json"),
            ("", "application/dicom+json"),
            ("*/*", "application/dicom+json"),
            ("application/*", "application/dicom+json"),
            ("application/dicom+json", "application/dicom+json"),
            ("Application/DICOM+JSON; charset=utf-8", "application/dicom+json"),
            ("application/json", "application/json"),
            (f"application/dicom+json, {OHIF_FRAMES}", "application/dicom+json"),
            (f"{OHIF_FRAMES}, application/json; q=0.2", "application/json"),
            ("application/json; q=0.5, application/dicom+json", "application/dicom+json"),
            ("application/json, application/dicom+json; q=0.5", "application/json"),
            ("application/dicom+json; q=0, */*", "application/json"),
            ("text/html, */*; q=0.1", "application/dicom+json"),
        ],
    )
    def test_acceptable(self, accept: str | None, expected: str) -> None:
        assert negotiate_json(accept) == expected

    @pytest.mark.parametrize(
        "accept",
        [
            "text/html",
            "application/dicom+xml",
            OHIF_FRAMES,
            "application/dicom+json; q=0",
            "application/dicom+json; q=0, application/json; q=0, */*",
        ],
    )
    def test_not_acceptable(self, accept: str) -> None:
        with pytest.raises(NotAcceptable) as info:
            negotiate_json(accept)
        assert "application/dicom+json" in info.value.message

    def test_query_parameter_takes_precedence(self) -> None:
        assert negotiate_json("text/html", "application/json") == "application/json"
        with pytest.raises(NotAcceptable):
            negotiate_json("application/dicom+json", "text/html")

    def test_long_accept_is_truncated_in_message(self) -> None:
        with pytest.raises(NotAcceptable) as info:
            negotiate_json("text/html, " * 60)
        assert len(info.value.message) < 400


class TestHostileAccept:
    """Whatever a client sends as Accept (or ``accept``): an answer or a 406/400, at once."""

    def test_too_many_media_ranges_is_a_400_naming_the_limit(self) -> None:
        at_limit = ", ".join(["text/html"] * (MAX_MEDIA_RANGES - 1) + ["application/json"])
        assert negotiate_json(at_limit) == "application/json"
        too_many = ", ".join(["application/json"] * (MAX_MEDIA_RANGES + 1))
        for negotiate in (negotiate_json, negotiate_instances, negotiate_frames):
            with pytest.raises(BadRequest) as info:
                negotiate(too_many)
            assert "MAX_MEDIA_RANGES" in info.value.message
            with pytest.raises(BadRequest):
                negotiate(None, too_many)  # the accept query parameter alike
        # a comma inside a quoted parameter value does not count
        quoted = 'application/json; x="' + "," * 200 + '"'
        assert negotiate_json(quoted) == "application/json"

    @settings(max_examples=400, deadline=None, database=None)
    @given(accept=hostile_accepts(), param=st.none() | hostile_accepts())
    def test_any_accept_is_an_answer_or_a_4xx(self, accept: str, param: str | None) -> None:
        for negotiate in (negotiate_json, negotiate_instances, negotiate_frames):
            refused: RstError | None = None
            try:
                negotiate(accept, param)
            except (NotAcceptable, BadRequest) as error:
                refused = error
            if refused is not None:
                assert refused.status in (400, 406)
                assert refused.message
                assert len(refused.message) < 1000  # the header is not echoed whole
