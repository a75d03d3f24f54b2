"""Rendered images (rst.dicom.render): synthetic data sets through the pixel pipeline, decoded
back with Pillow and compared with values worked out by hand from PS3.3 C.11.2."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless

from rst.dicom.render import frame_indices, read_dataset, render
from rst.dicom.render_params import (
    GIF,
    JPEG,
    PNG,
    Region,
    RenderedFormat,
    Rendering,
    Viewport,
    Window,
    negotiate_rendered,
    parse_rendering,
)
from rst.errors import BadRequest, NotAcceptable, NotFound, NotSupported

# -- helpers ------------------------------------------------------------------------------------


def image_dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2") -> Dataset:
    """A data set holding *pixels*: (rows, columns), (rows, columns, 3) for colour, with a
    leading axis of frames for a multi-frame one."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = "1.2.3.4"
    colour = photometric in ("RGB", "YBR_FULL")
    frames = pixels.ndim == (4 if colour else 3)
    shape = pixels.shape[1:] if frames else pixels.shape
    ds.Rows, ds.Columns = shape[0], shape[1]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames:
        ds.NumberOfFrames = pixels.shape[0]
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.tobytes()
    return ds


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def grey(ds: Dataset, rendering: Rendering | None = None, index: int = 0) -> np.ndarray:
    """Frame *index* rendered losslessly (PNG) and read back."""
    rendering = rendering or Rendering(PNG)
    return np.asarray(decoded(render(ds, [index], rendering)))


def linear(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.2.1, output 0-255."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255


def linear_exact(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.3.2."""
    if x <= c - w / 2:
        return 0.0
    if x > c + w / 2:
        return 255.0
    return (x - c) / w * 255 + 127.5


def sigmoid(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.3.1."""
    return 255 / (1 + math.exp(-4 * (x - c) / w))


# -- grey levels --------------------------------------------------------------------------------


def test_without_any_window_the_frame_range_is_stretched() -> None:
    ds = image_dataset(np.array([[100, 180], [260, 500]], dtype=np.uint16))
    assert grey(ds).tolist() == [[0, 51], [102, 255]]


def test_monochrome1_is_inverted() -> None:
    pixels = np.array([[100, 200], [300, 500]], dtype=np.uint16)
    m2 = grey(image_dataset(pixels, "MONOCHROME2"))
    m1 = grey(image_dataset(pixels, "MONOCHROME1"))
    assert (m1 == 255 - m2).all()
    assert m1[0, 0] == 255  # the smallest value is white


@pytest.mark.parametrize(
    ("function", "formula"),
    [("LINEAR", linear), ("LINEAR_EXACT", linear_exact), ("SIGMOID", sigmoid)],
)
def test_rescale_then_window_functions_at_known_points(
    function: str, formula: Callable[[float, float, float], float]
) -> None:
    # stored s -> modality 2s - 1000; window centre 0, width 400: -200..200 spans the range
    stored = np.array([[0, 400, 450, 475], [500, 525, 550, 600]], dtype=np.uint16)
    ds = image_dataset(stored)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    window = Window(0.0, 400.0, function)  # type: ignore[arg-type]
    rendered = grey(ds, Rendering(PNG, window=window))
    modality = stored.astype(float) * 2 - 1000
    expected = np.vectorize(formula)(modality, 0.0, 400.0)
    assert np.abs(rendered - expected).max() <= 0.5 + 1e-9
    assert rendered[0, 0] == 0  # far below the window
    assert rendered[1, 0] == 128  # the centre
    assert rendered[1, 3] == (255 if function != "SIGMOID" else round(sigmoid(200, 0, 400)))


def test_extreme_windows_render_without_warnings() -> None:
    ds = image_dataset(np.array([[0, 1000]], dtype=np.uint16))
    windows = [
        Window(1e308, 1.0, "LINEAR"),
        Window(1e308, 1e-300, "LINEAR_EXACT"),
        Window(1e308, 1e-300, "SIGMOID"),
    ]
    for window in windows:
        assert grey(ds, Rendering(PNG, window=window)).tolist() == [[0, 0]]


def test_linear_and_linear_exact_differ_where_the_standard_says() -> None:
    # width 2: LINEAR is a threshold at c - 0.5, LINEAR_EXACT a ramp over c - 1 .. c + 1
    ds = image_dataset(np.array([[9, 10, 11]], dtype=np.uint16))
    lin = grey(ds, Rendering(PNG, window=Window(10.0, 2.0, "LINEAR")))
    exact = grey(ds, Rendering(PNG, window=Window(10.0, 2.0, "LINEAR_EXACT")))
    assert lin.tolist() == [[0, 255, 255]]
    assert exact.tolist() == [[0, 128, 255]]


def test_the_first_window_preset_of_the_data_set_is_the_default() -> None:
    ds = image_dataset(np.array([[0, 50, 100, 1000]], dtype=np.uint16))
    ds.WindowCenter = [50, 500]
    ds.WindowWidth = [101, 1000]
    assert grey(ds).tolist() == [[1, 129, 255, 255]]
    # the request's window wins over the preset
    wide = grey(ds, Rendering(PNG, window=Window(500.0, 1001.0)))
    assert wide.tolist() == [[0, 13, 26, 255]]


def test_voi_lut_function_of_the_data_set_is_honoured() -> None:
    ds = image_dataset(np.array([[40, 50, 60]], dtype=np.uint16))
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 50, 20, "SIGMOID"
    assert grey(ds).tolist() == [[round(sigmoid(x, 50, 20)) for x in (40, 50, 60)]]


def test_voi_lut_sequence() -> None:
    ds = image_dataset(np.array([[0, 1, 2, 3, 9]], dtype=np.uint16))
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]  # 4 entries, first input 0, 16 bits
    item.LUTData = [1000, 2000, 3000, 4000]
    ds.VOILUTSequence = [item]
    ds.WindowCenter, ds.WindowWidth = 1, 1  # ignored: the LUT is preferred
    # output range of the LUT (1000..4000) stretched to 0..255; inputs past the end clamp
    assert grey(ds).tolist() == [[0, 85, 170, 255, 255]]


def test_modality_lut_sequence() -> None:
    ds = image_dataset(np.array([[0, 1, 2]], dtype=np.uint16))
    item = Dataset()
    item.LUTDescriptor = [3, 0, 16]
    item.LUTData = [10, 5, 0]
    ds.ModalityLUTSequence = [item]
    assert grey(ds).tolist() == [[255, 128, 0]]


def test_signed_16_bit_pixels() -> None:
    pixels = np.array([[-1000, -400, 0, 200, 2000]], dtype=np.int16)
    ds = image_dataset(pixels)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 0, 200, "LINEAR_EXACT"
    assert grey(ds).tolist() == [[0, 0, 128, 255, 255]]
    # and without a window: the signed range is stretched, not wrapped around
    del ds.WindowCenter, ds.WindowWidth
    assert grey(ds).tolist() == [[0, 51, 85, 102, 255]]


def test_bits_stored_below_bits_allocated() -> None:
    ds = image_dataset(np.array([[0, 2048, 4095]], dtype=np.uint16))
    ds.BitsStored, ds.HighBit = 12, 11
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    assert grey(ds).tolist() == [[0, 128, 255]]


# -- colour -------------------------------------------------------------------------------------

RED, GREEN, BLUE = (200, 30, 10), (20, 180, 40), (5, 10, 250)


def colour_bars() -> np.ndarray:
    return np.array([[RED, GREEN, BLUE]], dtype=np.uint8)


def test_rgb_passes_through() -> None:
    ds = image_dataset(colour_bars(), "RGB")
    out = np.asarray(decoded(render(ds, [0], Rendering(PNG))))
    assert out.tolist() == [[list(RED), list(GREEN), list(BLUE)]]


def test_ybr_full_is_converted_to_rgb() -> None:
    ybr = convert_color_space(colour_bars(), "RGB", "YBR_FULL")
    ds = image_dataset(ybr, "YBR_FULL")
    out = np.asarray(decoded(render(ds, [0], Rendering(PNG)))).astype(int)
    assert np.abs(out - colour_bars().astype(int)).max() <= 2


def test_palette_colour_is_applied() -> None:
    ds = image_dataset(np.array([[0, 1, 2, 3]], dtype=np.uint8), "PALETTE COLOR")
    tables = {"Red": [0, 65535, 0, 0], "Green": [0, 0, 65535, 0], "Blue": [0, 0, 0, 32896]}
    for colour, values in tables.items():
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.array(values, "<u2").tobytes())
    out = np.asarray(decoded(render(ds, [0], Rendering(PNG))))
    assert out.tolist() == [[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 128]]]


def test_16_bit_rgb_is_scaled_to_8_bits() -> None:
    pixels = np.array([[[65535, 0, 32768]]], dtype=np.uint16)
    out = np.asarray(decoded(render(image_dataset(pixels, "RGB"), [0], Rendering(PNG))))
    assert out.tolist() == [[[255, 0, 128]]]


# -- frames -------------------------------------------------------------------------------------


def frames_dataset(count: int = 4) -> Dataset:
    """Frame k (0-based) is uniform with the value 10 * k."""
    volume = np.stack([np.full((2, 3), 10 * k, dtype=np.uint16) for k in range(count)])
    ds = image_dataset(volume)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 15, 30, "LINEAR_EXACT"
    return ds


def test_multi_frame_frame_selection() -> None:
    ds = frames_dataset()
    # frame k -> value 10k -> (10k - 15) / 30 * 255 + 127.5, clamped
    assert [int(grey(ds, index=k)[0, 0]) for k in range(4)] == [0, 85, 170, 255]
    assert frame_indices(ds, [1, 4]) == [0, 3]
    with pytest.raises(NotFound, match="has 4 frame"):
        frame_indices(ds, [5])


def test_enhanced_multi_frame_functional_groups() -> None:
    ds = image_dataset(np.stack([np.full((1, 2), 100, dtype=np.uint16)] * 2))
    shared, first, second = Dataset(), Dataset(), Dataset()
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = 0, 100, "LINEAR_EXACT"
    shared.FrameVOILUTSequence = [voi]
    for item, intercept in ((first, -100), (second, -50)):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1, intercept
        item.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [first, second]
    assert grey(ds, index=0).tolist() == [[128, 128]]  # 100 - 100 = 0: the centre
    assert grey(ds, index=1).tolist() == [[255, 255]]  # 100 - 50 = 50: the top


def test_animated_gif_of_several_frames() -> None:
    out = decoded(render(frames_dataset(), [0, 1, 2], Rendering(GIF)))
    assert out.format == "GIF"
    assert getattr(out, "n_frames", 1) == 3


def test_several_frames_make_one_image_only_as_gif() -> None:
    with pytest.raises(NotAcceptable, match="image/gif"):
        render(frames_dataset(), [0, 1], Rendering(JPEG))


def test_no_pixel_data_is_not_acceptable() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    with pytest.raises(NotAcceptable, match=r"1\.2\.840\.10008\.5\.1\.4\.1\.1\.88\.11"):
        render(ds, [0], Rendering())


# -- viewport -----------------------------------------------------------------------------------


def gradient(rows: int = 40, columns: int = 80) -> Dataset:
    x = np.tile(np.arange(columns, dtype=np.uint16), (rows, 1))
    return image_dataset(x * 10 + np.arange(rows, dtype=np.uint16)[:, None])


def size_of(ds: Dataset, viewport: Viewport, media_type: str = PNG) -> tuple[int, int]:
    return decoded(render(ds, [0], Rendering(media_type, viewport=viewport))).size


def test_viewport_fits_keeping_the_aspect_ratio() -> None:
    ds = gradient(40, 80)
    assert size_of(ds, Viewport(20, 20)) == (20, 10)
    assert size_of(ds, Viewport(200, 200)) == (200, 100)  # scaled up too
    assert size_of(ds, Viewport(None, 20)) == (40, 20)
    assert size_of(ds, Viewport(40, None)) == (40, 20)


def test_viewport_source_region_crops_then_scales() -> None:
    ds = gradient(40, 80)
    region = Region(10, 5, 20, 10)
    assert size_of(ds, Viewport(40, 40, region)) == (40, 20)
    cropped = grey(ds, Rendering(PNG, viewport=Viewport(20, 10, region)))
    whole = grey(ds)
    assert (cropped == whole[5:15, 10:30]).all()  # same size: no resampling
    to_edge = Viewport(200, 200, Region(70, 30, None, None))
    assert size_of(ds, to_edge) == (200, 200)  # 10x10 left, scaled up


def test_viewport_negative_region_flips() -> None:
    ds = gradient(4, 6)
    whole = grey(ds)
    flipped = grey(ds, Rendering(PNG, viewport=Viewport(6, 4, Region(0, 0, -6, -4))))
    assert (flipped == whole[::-1, ::-1]).all()


def test_viewport_region_outside_the_image_is_400() -> None:
    with pytest.raises(BadRequest, match="outside the 80x40 image"):
        size_of(gradient(), Viewport(10, 10, Region(80, 0)))


@pytest.mark.parametrize("media_type", [JPEG, PNG, GIF])
def test_each_media_type_decodes_at_the_requested_size(media_type: str) -> None:
    image = decoded(render(gradient(64, 64), [0], Rendering(media_type, viewport=Viewport(32, 32))))
    assert image.format == {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}[media_type]
    assert image.size == (32, 32)


def test_jpeg_quality_changes_the_encoding() -> None:
    rng = np.random.default_rng(1)
    ds = image_dataset(rng.integers(0, 4096, size=(64, 64), dtype=np.uint16))
    small = render(ds, [0], Rendering(JPEG, quality=10))
    large = render(ds, [0], Rendering(JPEG, quality=95))
    assert len(small) < len(large)
    assert decoded(small).info.get("progressive", 0) == 0  # baseline, as PS3.18 asks


# -- compressed and real files ------------------------------------------------------------------


def test_rle_compressed_instance() -> None:
    ds = gradient(16, 16)
    expected = grey(ds)
    ds.compress(RLELossless)
    assert (grey(ds) == expected).all()


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", "RGB"),  # JPEG baseline, YBR_FULL_422
        ("JPEG2000.dcm", "L"),
        ("MR_small_jpeg_ls_lossless.dcm", "L"),
        ("MR_small_RLE.dcm", "L"),
    ],
)
def test_compressed_files_from_pydicom(name: str, mode: str) -> None:
    path = get_testdata_file(name, download=False)
    assert path is not None
    with open(path, "rb") as file:
        ds = read_dataset(file.read())
    image = decoded(render(ds, [0], Rendering(JPEG, viewport=Viewport(50, 50))))
    assert image.mode == mode
    assert max(image.size) == 50
    if name == "SC_rgb_jpeg_dcmtk.dcm":  # red at the top
        red = image.convert("RGB").getpixel((25, 2))
        assert isinstance(red, tuple)
        assert red[0] > 200
        assert max(red[1:]) < 50


def test_undecodable_pixel_data_is_not_supported() -> None:
    ds = gradient(4, 4)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder
    with pytest.raises(NotSupported, match=r"cannot decode frame 1"):
        render(ds, [0], Rendering())


def test_garbage_is_not_supported() -> None:
    with pytest.raises(NotSupported, match="cannot read"):
        read_dataset(b"\0" * 128 + b"DICM" + b"\xff" * 20)


# -- parameters ---------------------------------------------------------------------------------


def test_parse_rendering_defaults_and_values() -> None:
    assert parse_rendering([]) == Rendering()
    parsed = parse_rendering(
        [
            ("quality", "55"),
            ("viewport", "256,128"),
            ("window", "40,400,linear-exact"),
            ("annotation", "patient,technique"),
            ("accept", "image/png"),
            ("iccprofile", "srgb"),
            ("somethingelse", "ignored"),
        ],
        PNG,
    )
    assert parsed == Rendering(PNG, 55, Viewport(256, 128), Window(40.0, 400.0, "LINEAR_EXACT"))
    assert parse_rendering([("viewport", "64,64,1.4,2,-30,")]).viewport == Viewport(
        64, 64, Region(1, 2, -30, None)
    )
    assert parse_rendering([("window", "-600,1500")]).window == Window(-600.0, 1500.0, "LINEAR")
    assert parse_rendering([("window", "1,2,SIGMOID")]).window == Window(1.0, 2.0, "SIGMOID")
    default = Viewport(128, 128)
    assert parse_rendering([], default_viewport=default).viewport == default


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("quality", "0", "quality"),
        ("quality", "101", "quality"),
        ("quality", "high", "quality"),
        ("quality", "-5", "quality"),
        ("quality", "²", "quality"),
        ("viewport", "256", "2 or|vw,vh"),
        ("viewport", "256,256,1", "vw,vh"),
        ("viewport", "0,256", "vw must be"),
        ("viewport", "256,abc", "vh must be"),
        ("viewport", "99999,10", "vw must be"),
        ("viewport", "10,¹", "vh must be"),
        ("viewport", ",", "needs vw or vh"),
        ("viewport", "10,10,-1,0,5,5", "must not be negative"),
        ("viewport", "10,10,0,0,0,5", "must not be 0"),
        ("viewport", "10,10,x,0,5,5", "sx must be a number"),
        ("window", "40", "center,width"),
        ("window", "40,400,cubic", "linear, linear-exact or sigmoid"),
        ("window", "abc,400,linear", "center must be a number"),
        ("window", "40,nan,linear", "width must be a number"),
        ("window", "40,0.5,linear", "at least 1"),
        ("window", "40,0,sigmoid", "greater than 0"),
        ("window", "40,-3,linear-exact", "greater than 0"),
        ("annotation", "patient,name", "patient and/or technique"),
    ],
)
def test_bad_parameters_are_400(name: str, value: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_rendering([(name, value)])


def test_a_repeated_parameter_is_400() -> None:
    with pytest.raises(BadRequest, match="more than once"):
        parse_rendering([("quality", "50"), ("quality", "60")])


# -- negotiation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, RenderedFormat(JPEG)),
        ("", RenderedFormat(JPEG)),
        ("image/png", RenderedFormat(PNG)),
        ("image/gif, image/png;q=0.5", RenderedFormat(GIF)),
        ("image/webp,image/apng,image/*,*/*;q=0.8", RenderedFormat(JPEG)),  # a browser's <img>
        ("image/*, image/jpeg;q=0", RenderedFormat(PNG)),
        ("*/*", RenderedFormat(JPEG)),
        ('multipart/related; type="image/png"', RenderedFormat(PNG, multipart=True)),
        ("multipart/related;type=image/gif", RenderedFormat(GIF, multipart=True)),
        ("application/dicom, image/jpeg;q=0.2", RenderedFormat(JPEG)),
    ],
)
def test_negotiate_rendered(accept: str | None, expected: RenderedFormat) -> None:
    assert negotiate_rendered(accept) == expected


def test_the_accept_parameter_replaces_the_header() -> None:
    assert negotiate_rendered("image/png", "image/gif") == RenderedFormat(GIF)


@pytest.mark.parametrize(
    "accept", ["application/dicom", "image/jp2", 'multipart/related; type="application/dicom"']
)
def test_unrenderable_media_types_are_406(accept: str) -> None:
    with pytest.raises(NotAcceptable, match="rst renders image/jpeg, image/png, image/gif"):
        negotiate_rendered(accept)


def test_thumbnails_are_never_multipart() -> None:
    with pytest.raises(NotAcceptable):
        negotiate_rendered('multipart/related; type="image/jpeg"', multipart=False)
    assert negotiate_rendered("image/png", multipart=False) == RenderedFormat(PNG)
