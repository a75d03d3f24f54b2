"""Frames of a Part 10 instance: native slicing (8, 16 and 1 bit), encapsulated splitting (with and
without offset tables), decoding and encoding; the frame list of a URL."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.pixels.utils import pack_bits
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from rst.dicom.frames import MAX_FRAMES, FrameSource, parse_frame_list, read_frames
from rst.errors import BadRequest, NotAcceptable, NotFound
from tests.support.frames import (
    EVLE,
    decode,
    encapsulated,
    image,
    native,
    part10,
    rle_frames,
    volume,
)

# -- the frame list ------------------------------------------------------------------------------


class TestParseFrameList:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [("1", (1,)), ("3,1,2", (3, 1, 2)), ("2, 2", (2, 2)), ("0010", (10,))],
    )
    def test_valid(self, text: str, expected: tuple[int, ...]) -> None:
        assert parse_frame_list(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            *("0", "1,0", "-1", "+1", "", "1,,2", "1,", "a", "1.5", "1;2", "12345678901"),
            *("\u0661", "\u00b2"),  # an Arabic-Indic 1, a superscript 2: digits, not ASCII
        ],
    )
    def test_invalid_is_a_bad_request(self, text: str) -> None:
        with pytest.raises(BadRequest) as info:
            parse_frame_list(text)
        assert "frame" in info.value.message
        assert info.value.status == 400

    def test_zero_says_frames_count_from_one(self) -> None:
        with pytest.raises(BadRequest, match="numbered from 1"):
            parse_frame_list("2,0")

    def test_too_many(self) -> None:
        assert len(parse_frame_list(",".join(["1"] * MAX_FRAMES))) == MAX_FRAMES
        with pytest.raises(BadRequest, match="at most"):
            parse_frame_list(",".join(["1"] * (MAX_FRAMES + 1)))


# -- native pixel data ---------------------------------------------------------------------------


class TestNative:
    @pytest.mark.parametrize("dtype", ["<u2", "<i2", "u1"])
    def test_multiframe_slices(self, dtype: str) -> None:
        frames = volume(5, dtype=dtype)
        source = FrameSource(native(frames, signed=dtype == "<i2"))
        assert source.number_of_frames == 5
        assert source.transfer_syntax == EVLE
        got = source.frames([5, 1, 3])
        assert [f.number for f in got] == [5, 1, 3]
        assert [f.data for f in got] == [
            frames[4].tobytes(),
            frames[0].tobytes(),
            frames[2].tobytes(),
        ]
        assert {f.transfer_syntax for f in got} == {EVLE}

    def test_single_frame(self) -> None:
        frames = volume(1)
        [frame] = read_frames(native(frames), [1], None)
        assert frame.data == frames[0].tobytes()

    def test_implicit_vr_is_labelled_explicit(self) -> None:
        frames = volume(3)
        got = read_frames(native(frames, syntax=str(ImplicitVRLittleEndian)), [2], None)
        assert got[0].data == frames[1].tobytes()
        assert got[0].transfer_syntax == EVLE

    def test_big_endian_is_swapped(self) -> None:
        path = get_testdata_file("MR_small_bigendian.dcm", download=False)
        assert path is not None
        data = Path(str(path)).read_bytes()
        ds = dcmread(BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
        [frame] = read_frames(data, [1], None)
        assert frame.transfer_syntax == EVLE
        assert frame.data == ds.pixel_array.astype("<i2").tobytes()

    def test_bits_allocated_1_frames_not_on_byte_boundaries(self) -> None:
        # 3 frames of 3x5 = 15 bits each: frame 2 starts at bit 15, frame 3 at bit 30
        rng = np.random.default_rng(1)
        bits = rng.integers(0, 2, size=(3, 3, 5)).astype(np.uint8)
        ds = image(bits, bits_allocated=1)
        ds.PixelData = pack_bits(bits)
        ds["PixelData"].VR = "OB"
        data = part10(ds)
        assert np.array_equal(dcmread(BytesIO(data)).pixel_array, bits)  # the fixture is right
        got = FrameSource(data).frames([1, 2, 3])
        for frame, expected in zip(got, bits, strict=True):
            assert len(frame.data) == 2  # 15 bits, padded to whole bytes
            assert frame.data == pack_bits(expected)

    def test_truncated_pixel_data(self) -> None:
        frames = volume(4)
        ds = image(frames)
        ds.PixelData = frames.tobytes()[: frames[0].nbytes * 3]
        with pytest.raises(NotFound, match="too short for frame 4"):
            read_frames(part10(ds), [4], None)


# -- encapsulated pixel data ---------------------------------------------------------------------


class TestEncapsulated:
    @pytest.mark.parametrize("offsets", ["basic", "none", "extended"])
    def test_multiframe_as_stored(self, offsets: str) -> None:
        frames = volume(4)
        data, encoded = encapsulated(frames, offsets=offsets)
        source = FrameSource(data)
        assert source.transfer_syntax == str(RLELossless)
        got = source.frames([4, 2])
        assert [f.data for f in got] == [encoded[3], encoded[1]]
        assert {f.transfer_syntax for f in got} == {str(RLELossless)}

    def test_single_frame_in_several_fragments_without_offsets(self) -> None:
        frames = volume(1, rows=16, columns=16)
        data, encoded = encapsulated(frames, offsets="none", fragments_per_frame=3)
        [frame] = read_frames(data, [1], None)
        assert frame.data.rstrip(b"\0") == encoded[0].rstrip(b"\0")
        assert np.array_equal(decode(frame.data, str(RLELossless), frames), frames[0])

    @pytest.mark.parametrize("offsets", ["basic", "none"])
    def test_decompressed_to_explicit_vr_little_endian(self, offsets: str) -> None:
        frames = volume(3)
        data, _ = encapsulated(frames, offsets=offsets)
        got = read_frames(data, [3, 1], EVLE)
        assert [f.data for f in got] == [frames[2].tobytes(), frames[0].tobytes()]
        assert {f.transfer_syntax for f in got} == {EVLE}

    def test_fewer_frames_than_number_of_frames(self) -> None:
        frames = volume(2)
        encoded = rle_frames(frames)
        ds = image(volume(3))
        ds.PixelData = encapsulate(encoded, has_bot=False)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        with pytest.raises(NotFound):
            read_frames(part10(ds, str(RLELossless)), [3], None)

    def test_out_of_range_is_not_found(self) -> None:
        data, _ = encapsulated(volume(2))
        with pytest.raises(NotFound) as info:
            read_frames(data, [1, 3, 7], None)
        assert "has 2 frames" in info.value.message
        assert "3, 7" in info.value.message


# -- transcoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
@pytest.mark.parametrize("dtype", ["<u2", "<i2"])
def test_native_frames_encoded_losslessly(syntax: UID, dtype: str) -> None:
    frames = volume(3, rows=32, columns=40, dtype=dtype)  # OpenJPEG wants at least 32x32
    got = read_frames(native(frames, signed=dtype == "<i2"), [2, 3], str(syntax))
    assert {f.transfer_syntax for f in got} == {str(syntax)}
    for frame, expected in zip(got, frames[1:], strict=True):
        assert np.array_equal(decode(frame.data, str(syntax), frames), expected)


def test_a_frame_listed_twice_is_encoded_once() -> None:
    frames = volume(2, rows=32, columns=32)
    first, again = read_frames(native(frames), [2, 2], str(JPEGLSLossless))
    assert first.data is again.data
    plain = read_frames(native(frames), [1, 2, 1], None)
    assert plain[0].data is plain[2].data


def test_compressed_frames_into_another_compressed_syntax() -> None:
    frames = volume(3, rows=16, columns=24)
    data, _ = encapsulated(frames, offsets="none")
    [frame] = read_frames(data, [2], str(JPEGLSLossless))
    assert frame.transfer_syntax == str(JPEGLSLossless)
    assert np.array_equal(decode(frame.data, str(JPEGLSLossless), frames), frames[1])


def test_one_bit_frames_cannot_be_encoded() -> None:
    bits = np.ones((2, 4, 4), dtype=np.uint8)
    ds = image(bits, bits_allocated=1)
    ds.PixelData = pack_bits(bits)
    with pytest.raises(NotAcceptable, match="cannot encode"):
        read_frames(part10(ds), [1], str(JPEGLSLossless))


def test_undecodable_frames_are_not_acceptable() -> None:
    frames = volume(2)
    encoded = [b"\x00" * 16, b"\x00" * 16]  # RLE headers declaring no segments
    ds = image(frames)
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = part10(ds, str(RLELossless))
    assert read_frames(data, [1], None)[0].data == encoded[0]  # as stored: no decoding
    with pytest.raises(NotAcceptable, match="transfer-syntax=\\*"):
        read_frames(data, [1], EVLE)


def test_no_pixel_data_no_frames() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = "1.2.3.4.6"
    with pytest.raises(NotFound, match="no pixel data"):
        read_frames(part10(ds), [1], None)
