"""The viewport of a rendered image (PS3.18 §8.3.5.1.3): its source region (cropped, and
flipped for negative sizes), then scaled to fit the viewport with its aspect ratio kept
(Pillow's Lanczos), never past :data:`~rst.dicom.render_params.MAX_VIEWPORT` a side.
"""

from __future__ import annotations

from PIL import Image

from rst.dicom.render_params import MAX_VIEWPORT, Region, Viewport
from rst.errors import BadRequest

__all__ = ["fit_viewport"]


def fit_viewport(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """The source region of *image*, then scaled to fit the viewport (PS3.18 §8.3.5.1.3)."""
    if viewport is None:
        return image
    if viewport.region is not None:
        image = _region(image, viewport.region)
    width, height = image.size
    scales = []
    if viewport.width is not None:
        scales.append(viewport.width / width)
    if viewport.height is not None:
        scales.append(viewport.height / height)
    scale = min(scales)
    size = (
        min(MAX_VIEWPORT, max(1, round(width * scale))),
        min(MAX_VIEWPORT, max(1, round(height * scale))),
    )
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _region(image: Image.Image, region: Region) -> Image.Image:
    width, height = image.size
    if region.x >= width or region.y >= height:
        raise BadRequest(
            f"the viewport's source region starts at ({region.x}, {region.y}), outside the "
            f"{width}x{height} image"
        )
    right = width if region.width is None else min(width, region.x + abs(region.width))
    bottom = height if region.height is None else min(height, region.y + abs(region.height))
    image = image.crop((region.x, region.y, right, bottom))
    if region.width is not None and region.width < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if region.height is not None and region.height < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image
