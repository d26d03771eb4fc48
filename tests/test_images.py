"""The decode policy (fastload.codecs.images): formats by content, colour modes, bit depth, EXIF."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imagefiles import dicom, encode, jpeg, pixels, png16, png_claiming, with_exif_orientation
from PIL import Image

from fastload.codecs import images
from fastload.errors import BadInputError


def _validate(data: bytes) -> tuple[images.ImageInfo, np.ndarray]:
    info, image = images.validate(data, "test")
    assert image.shape == (info.height, info.width, info.channels)
    assert np.array_equal(images.decode(data), image)  # what readers get == what was validated
    return info, image


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_rgb_formats_decode_exactly(fmt):
    rgb = pixels(33, 47, 3, seed=1)
    params = {"lossless": True} if fmt == "WEBP" else {}
    info, image = _validate(encode(rgb, fmt, **params))
    assert info.format == fmt.lower() and image.dtype == np.uint8
    assert np.array_equal(image, rgb)


def test_jpeg_decodes_close_to_source():
    data = encode(pixels(48, 64, 3, seed=2), "JPEG", quality=95)
    info, image = _validate(data)
    assert (info.format, info.channels) == ("jpeg", 3)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # another libjpeg
    assert np.abs(image.astype(int) - reference).mean() < 1


def test_cmyk_jpeg_becomes_rgb():
    rgb = pixels(40, 40, 3, seed=3)
    data = encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    info, image = _validate(data)
    assert info.mode == "CMYK" and image.shape == (40, 40, 3)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(image.astype(int) - reference).max() <= 2


@pytest.mark.parametrize("transparency", [False, True])
def test_palette_png_becomes_rgb(transparency):
    pal = Image.fromarray(pixels(30, 30, 3, seed=4)).convert("P")
    data = encode(pal, "PNG", **({"transparency": 0} if transparency else {}))
    info, image = _validate(data)
    assert info.mode == "P" and image.shape == (30, 30, 3)
    assert np.array_equal(image, np.asarray(pal.convert("RGB")))


def test_rgba_png_drops_alpha():
    rgb = pixels(30, 31, 3, seed=5)
    rgba = np.dstack([rgb, np.linspace(0, 255, 30 * 31).reshape(30, 31).astype(np.uint8)])
    info, image = _validate(encode(rgba, "PNG"))
    assert info.mode == "RGBA" and np.array_equal(image, rgb)


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_grayscale_stays_one_channel(mode):
    gray = pixels(30, 32, 1, seed=6)
    info, image = _validate(encode(Image.fromarray(gray).convert(mode), "PNG"))
    assert info.mode == mode and image.shape == (30, 32, 1)
    assert np.array_equal(image[:, :, 0], gray)


def test_grayscale_jpeg_stays_one_channel():
    info, image = _validate(encode(pixels(32, 32, 1), "JPEG"))
    assert image.shape == (32, 32, 1)


def test_16bit_gray_png_keeps_every_bit():
    gray = pixels(36, 44, 1, seed=7, dtype=np.uint16)
    info, image = _validate(png16(gray))
    assert (info.dtype, info.channels) == ("uint16", 1)
    assert image.dtype == np.uint16 and np.array_equal(image[:, :, 0], gray)


def test_16bit_rgb_png_keeps_every_bit():
    rgb = pixels(36, 44, 3, seed=8, dtype=np.uint16)
    info, image = _validate(png16(rgb))
    assert (info.dtype, info.channels) == ("uint16", 3)
    assert np.array_equal(image, rgb)


def test_16bit_tiff_keeps_every_bit(tmp_path):
    import tifffile

    rgb = pixels(20, 24, 3, seed=9, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", rgb, photometric="rgb")
    info, image = _validate((tmp_path / "x.tif").read_bytes())
    assert info.format == "tiff" and image.dtype == np.uint16 and np.array_equal(image, rgb)


def test_gif_gives_first_frame():
    first = Image.fromarray(pixels(24, 28, 3, seed=10)).convert("P")
    second = Image.fromarray(255 - pixels(24, 28, 3, seed=10)).convert("P")
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second])
    info, image = _validate(buf.getvalue())
    assert info.format == "gif" and np.array_equal(image, np.asarray(first.convert("RGB")))


@pytest.mark.parametrize("orientation, rotate", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(orientation, rotate):
    rgb = pixels(30, 50, 3, seed=11)
    info, image = _validate(with_exif_orientation(rgb, orientation, "PNG"))
    assert np.array_equal(image, np.rot90(rgb, rotate))


def test_exif_orientation_jpeg_is_upright():
    info, image = _validate(with_exif_orientation(pixels(30, 50, 3), 6, "JPEG"))
    assert image.shape == (50, 30, 3)


def test_dicom_keeps_12bit_values():
    pytest.importorskip("pydicom")
    values = (pixels(24, 20, 1, seed=12, dtype=np.uint16) >> 4)  # 0..4095
    info, image = _validate(dicom(values))
    assert (info.format, info.dtype) == ("dicom", "uint16")
    assert np.array_equal(image[:, :, 0], values) and values.max() > 255


def test_format_comes_from_content_not_name():
    assert images.sniff_format(encode(pixels(), "PNG")) == "png"
    assert images.sniff_format(jpeg()) == "jpeg"
    assert images.sniff_format(b"hello") is None


def test_huge_header_refused_before_decoding():
    with pytest.raises(BadInputError, match="50000x50000|pixels"):
        images.probe(png_claiming(50000, 50000), "bomb.png")


def test_max_pixels_is_honoured():
    data = jpeg(height=40, width=56)
    with pytest.raises(BadInputError, match="more than the limit of 1,000"):
        images.validate(data, "x.jpg", max_pixels=1000)


def test_max_pixels_above_pillows_own_limit_is_honoured():
    # 200 M pixels: over Pillow's decompression-bomb bound, under this max_pixels.
    info = images.probe(png_claiming(20000, 10000), "big.png", max_pixels=300_000_000)
    assert (info.width, info.height, info.mode) == (20000, 10000, "L")


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_jpeg_header_read_without_pillow_agrees_with_pillow(mode):
    data = encode(Image.fromarray(pixels(33, 47, 3)).convert(mode), "JPEG")
    info = images.probe(data)
    with Image.open(io.BytesIO(data)) as im:
        assert (info.width, info.height, info.mode) == (*im.size, im.mode)
