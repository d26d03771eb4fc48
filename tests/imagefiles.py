"""Small image files of every kind the packer meets, written by the tests themselves.

Pixels are smooth gradients plus a little texture (not flat, not noise), 32-96 px, so every
decode is fast and every comparison can be exact (PNG, TIFF, BMP) or close (JPEG).
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def pixels(height: int = 40, width: int = 56, channels: int = 3, seed: int = 0,
           dtype: type = np.uint8) -> np.ndarray:
    """An HxWxC test image (C=1 gives HxW): gradients and texture, different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for c in range(channels):
        base = 0.5 + 0.4 * np.sin(x / (5 + c + seed % 7) + y / (7 + 2 * c)) * np.cos(y / 9.0)
        planes.append(np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1))
    top = np.iinfo(dtype).max
    image = (np.stack(planes, axis=-1) * top).round().astype(dtype)
    return image[:, :, 0] if channels == 1 else image


def encode(image: np.ndarray | Image.Image, fmt: str, **params) -> bytes:
    """Encode with Pillow (``fmt`` as Pillow names it: JPEG, PNG, GIF, BMP, TIFF, WEBP)."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg(seed: int = 0, height: int = 40, width: int = 56, quality: int = 92) -> bytes:
    return encode(pixels(height, width, 3, seed), "JPEG", quality=quality)


def png(seed: int = 0, height: int = 40, width: int = 56) -> bytes:
    return encode(pixels(height, width, 3, seed), "PNG")


def png16(image: np.ndarray) -> bytes:
    """A 16-bit PNG (gray HxW or RGB HxWx3) written by OpenCV, which keeps all 16 bits."""
    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG (valid CRCs, an IDAT holding a few real rows) whose IHDR claims
    ``width x height`` 8-bit gray pixels: a decoder that trusts the header allocates it all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(width) for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def with_exif_orientation(image: np.ndarray, orientation: int, fmt: str = "PNG") -> bytes:
    """``image`` stored as-is, with an EXIF tag telling viewers to apply ``orientation``."""
    im = Image.fromarray(image)
    exif = im.getexif()
    exif[0x0112] = orientation
    params = {"quality": 95} if fmt == "JPEG" else {}
    return encode(im, fmt, exif=exif.tobytes(), **params)


def dicom(image: np.ndarray, bits_stored: int = 12) -> bytes:
    """A minimal, valid DICOM file (preamble, DICM, explicit VR little endian) of a uint16
    grayscale image holding ``bits_stored``-bit values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(image, dtype="<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def npy(array: np.ndarray, **params) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (``np.save``'s ``params``)."""
    buf = io.BytesIO()
    np.save(buf, array, **params)
    return buf.getvalue()


def write(path: str | bytes | os.PathLike, data: bytes) -> str | bytes:
    """Write ``data`` at ``path`` (str or bytes, parents created); return the path."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def good_folder(root: str, per_class: int = 3, classes: tuple[str, ...] = ("cat", "dog")) -> list[str]:
    """An ImageFolder of small good JPEGs; returns their paths in pack (sorted) order."""
    paths = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            paths.append(write(os.path.join(root, name, f"good_{i:02d}.jpg"), jpeg(seed=10 * c + i)))
    return paths
