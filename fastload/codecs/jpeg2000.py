"""JPEG 2000 records: a DICOM frame's codestream kept as it is, in a JP2 file that carries the
DICOM policy beside it.

A record is a standard JP2 file (ISO/IEC 15444-1 Annex I): signature, ``ftyp``, ``jp2h``
(``ihdr`` + ``colr``), then a ``uuid`` box holding ``FASTLOAD_UUID`` and UTF-8 JSON
(``{"policy": ..., "meta": ...}``, see ``pixelpolicy.PixelPolicy``), then the ``jp2c`` box with the
codestream byte for byte as the DICOM file held it. JP2 readers skip ``uuid`` boxes they do not
know, so nvJPEG2000 (DALI's ``fn.decoders.image(device="mixed")``) decodes the stored values;
the policy (rescale, inversion, window) then finishes the job. ``decode`` does both on the CPU.
Plain ``.jp2``/``.j2k`` files decode by the image policy (gray or RGB, 8 or 16 bit).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from .._optional import require
from ..errors import BadInputError
from .base import Codec, ImageInfo, Magic, check_pixels
from .pixelpolicy import PixelPolicy

__all__ = ["FASTLOAD_UUID", "JP2_SIGNATURE", "CODESTREAM_SIGNATURE", "CODEC", "wrap", "unwrap",
           "codestream_header", "decode", "probe", "probe_size"]

# LEAD: the GPU path for these records needs the DALI pipeline (not written here: no GPU in this
# session). What it must do for a store whose header.encodings holds "jpeg2000":
#  1. Until step 2 exists, loader._dali_decodes must return False for such stores (and for
#     "int16"/"int32"/"uint32"/"float32" dtypes): today it says True for "jpeg2000", so DALI
#     would hand out stored values decoded to uint8, not the policy's pixels. backend="torch"
#     reads them right (store.decode applies the policy).
#  2. Decode: fn.decoders.image(data, device="mixed", output_type=types.ANY_DATA,
#     dtype=types.UINT16) -> HxWx1 stored values (nvJPEG2000 skips the uuid box; DALI's CPU
#     decoder was checked to return exactly OpenJPEG's values for these JP2 records). Signed
#     codestreams (policy meta.signed, CT with Pixel Representation 1) are unverified in DALI:
#     test one; if DALI returns them as unsigned, reinterpret with bits from the SIZ marker.
#  3. Policy per sample, from unwrap(payload)[1]["policy"] (parse once per record on the host,
#     or read store.metadata's dicom_rescale_slope/intercept + the record's dtype), fed as a
#     per-sample float vector [slope, intercept, invert, lo, hi, center, width, windowed]
#     through fn.external_source; on the GPU: x = float(x) * slope + intercept; if invert and
#     not windowed: x = lo + hi - x; if windowed (LINEAR): y = clamp((x - (c - 0.5)) / (w - 1)
#     + 0.5, 0, 1) * 255, rounded, and 255 - y if invert; cast to policy.dtype (int16 HU, or
#     uint8 when windowed). PixelPolicy.apply is the reference; a test can compare the two.
#  4. Normalization: max_value(int16) is 32767 and the store's stats use the same unit, so
#     Normalize(mean="store") is consistent; a windowing op in the loader (center/width from
#     store.metadata) is the natural next op for HU records.
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
CODESTREAM_SIGNATURE = b"\xff\x4f\xff\x51"  # SOC then SIZ
# uuid5(NAMESPACE_URL, "fastload:dicom-policy:1"): marks the box holding fastload's policy JSON.
FASTLOAD_UUID = b"si4\xa7\xb8\x05V)\xa2\xab\x96\r\x97\xbd\x974"
_GREYSCALE, _SRGB = 17, 16  # colr enumerated colour spaces


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def codestream_header(codestream: bytes, path: str = "<bytes>") -> tuple[int, int, int, int, bool]:
    """(height, width, components, bits, signed) of a J2K codestream, from its SIZ marker
    (component 0's depth and sign)."""
    if not codestream.startswith(CODESTREAM_SIGNATURE) or len(codestream) < 42:
        raise BadInputError(path, "not a JPEG 2000 codestream (no SOC/SIZ markers)")
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", codestream[8:24])
    components = struct.unpack(">H", codestream[40:42])[0]
    if components < 1 or len(codestream) < 43:
        raise BadInputError(path, "JPEG 2000 SIZ marker names no component")
    ssiz = codestream[42]
    return ysiz - yo, xsiz - xo, components, (ssiz & 0x7F) + 1, bool(ssiz & 0x80)


def wrap(codestream: bytes, extra: bytes) -> bytes:
    """A JP2 file around ``codestream`` (one component) with ``extra`` JSON in a uuid box."""
    height, width, components, bits, signed = codestream_header(codestream)
    bpc = (bits - 1) | (0x80 if signed else 0)
    ihdr = struct.pack(">IIHBBBB", height, width, components, bpc, 7, 0, 0)
    colr = struct.pack(">BBBI", 1, 0, 0, _GREYSCALE if components == 1 else _SRGB)
    return b"".join((JP2_SIGNATURE, _box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 "),
                     _box(b"jp2h", _box(b"ihdr", ihdr) + _box(b"colr", colr)),
                     _box(b"uuid", FASTLOAD_UUID + extra), _box(b"jp2c", codestream)))


def unwrap(data: bytes, path: str = "<bytes>") -> tuple[bytes, dict[str, Any] | None]:
    """(codestream, fastload's JSON or None) of a JP2 file or a bare codestream."""
    if data.startswith(CODESTREAM_SIGNATURE):
        return data, None
    extra, codestream, offset = None, None, 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:  # 64-bit length follows
            size, header = struct.unpack(">Q", data[offset + 8 : offset + 16])[0], 16
        elif size == 0:  # the box runs to the end of the file
            size = len(data) - offset
        if size < header or offset + size > len(data):
            raise BadInputError(path, f"truncated JP2 file: box {kind!r} runs past the end")
        body = data[offset + header : offset + size]
        if kind == b"uuid" and body.startswith(FASTLOAD_UUID):
            try:
                extra = json.loads(body[len(FASTLOAD_UUID):])
            except ValueError:
                raise BadInputError(path, "fastload's policy box in the JP2 file is not JSON") from None
        elif kind == b"jp2c":
            codestream = body
        offset += size
    if codestream is None:
        raise BadInputError(path, "JP2 file without a codestream (jp2c) box")
    return codestream, extra


def probe_size(data: bytes, path: str) -> tuple[int, int, int, int, bool]:
    """``codestream_header`` of a JP2 file or bare codestream."""
    return codestream_header(unwrap(data, path)[0], path)


def probe(data: bytes, path: str, max_pixels: int) -> ImageInfo:
    """Size and depth from the SIZ marker, as the image policy will decode it (gray or RGB)."""
    height, width, components, bits, _ = probe_size(data, path)
    check_pixels(path, width, height, max_pixels)
    channels = 1 if components <= 2 else 3
    return ImageInfo("jpeg2000", height, width, channels, "uint8" if bits <= 8 else "uint16",
                     "L" if channels == 1 else "RGB")


def _decode_codestream(codestream: bytes, path: str) -> np.ndarray:
    openjpeg = require("openjpeg", "dicom", "Decoding JPEG 2000", package="pylibjpeg-openjpeg")
    try:
        return np.asarray(openjpeg.decode(codestream))
    except Exception as exc:  # OpenJPEG reports broken streams with RuntimeError and others
        raise BadInputError(path, f"JPEG 2000 codestream cannot be decoded: {exc}") from None


def decode(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """A JP2 file or bare codestream as ``HxWxC``: by fastload's DICOM policy when the file
    carries one, else gray (1 channel) or RGB (alpha dropped), 8 or 16 bit."""
    codestream, extra = unwrap(data, path)
    _, _, _, bits, signed = codestream_header(codestream, path)
    stored = _decode_codestream(codestream, path)
    if extra is not None and "policy" in extra:
        stored = _fix_sign(stored, bits, signed, extra.get("meta", {}))
        if stored.ndim != 2:
            raise BadInputError(path, f"a DICOM policy applies to one component, found {stored.shape}")
        return PixelPolicy.from_json(extra["policy"]).apply(stored, path)
    if signed or stored.dtype.kind not in "u" or stored.dtype.itemsize > 2:
        raise BadInputError(path, f"JPEG 2000 of {bits}-bit {'signed' if signed else stored.dtype} "
                                  "samples: only 8- and 16-bit unsigned images are supported")
    image = stored.astype(np.uint8 if bits <= 8 else np.uint16, copy=False)
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    if image.shape[2] == 2:  # gray + alpha
        return np.ascontiguousarray(image[:, :, :1])
    raise BadInputError(path, f"JPEG 2000 with {image.shape[2]} components (expected 1-4)")


def _fix_sign(stored: np.ndarray, bits: int, signed: bool, meta: dict[str, Any]) -> np.ndarray:
    """Stored values as the DICOM header reads them: a codestream whose sign differs from
    Pixel Representation is reinterpreted, as pydicom does."""
    want_signed = bool(meta.get("signed", signed))
    if want_signed == signed:
        return stored
    if want_signed:  # unsigned samples holding two's-complement values
        values = stored.astype(np.int32)
        values[values >= (1 << (bits - 1))] -= 1 << bits
        return values.astype(np.int16 if bits <= 16 else np.int32)
    return (stored.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint16 if bits <= 16 else np.uint32)


def _probe(data: bytes, fmt: str, path: str, max_pixels: int) -> ImageInfo:
    return probe(data, path, max_pixels)


def _decode(data: bytes, fmt: str, path: str) -> np.ndarray:
    return decode(data, path)


CODEC = Codec("jpeg2000", (Magic("jpeg2000", ((0, JP2_SIGNATURE),)),
                           Magic("jpeg2000", ((0, CODESTREAM_SIGNATURE),))), ("jpeg2000",), _probe, _decode)
