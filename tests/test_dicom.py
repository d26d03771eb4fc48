"""DICOM as the medical-imaging field reads it: every syntax the `dicom` extra decodes packs, and
records hold pydicom's own ``pixel_array`` after the documented policy (fastload.codecs.dicom).

Every file is written here with pydicom (compressed with pydicom's encoders, or with
imagecodecs and encapsulated where pydicom has none).
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from imagefiles import jpeg, pixels, png16, write  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

import fastload  # noqa: E402
from fastload import DicomOptions, PackOptions  # noqa: E402
from fastload.cli import main  # noqa: E402
from fastload.codecs import images, jpeg2000  # noqa: E402
from fastload.codecs.dicom import PixelPolicy  # noqa: E402
from fastload.errors import PackError  # noqa: E402


def _dataset(image: np.ndarray, *, bits_stored: int = 12, signed: bool = False,
             photometric: str | None = None, frames: int = 1, **attrs) -> Dataset:
    """A native (uncompressed) data set of ``image`` (HxW, HxWx3, or NxHxW[x3] with frames)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    colour = image.ndim == (4 if frames > 1 else 3)
    shape = image.shape[1:] if frames > 1 else image.shape
    ds.Rows, ds.Columns = shape[0], shape[1]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    bits = image.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, min(bits_stored, bits), min(bits_stored, bits) - 1
    ds.PixelRepresentation = int(signed)
    for name, value in attrs.items():
        setattr(ds, name, value)
    ds.PixelData = np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("<")).tobytes()
    return ds


def _bytes(ds: Dataset, preamble: bytes | None = None) -> bytes:
    if preamble is not None:
        ds.preamble = preamble.ljust(128, b"\0")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _compressed(ds: Dataset, syntax) -> bytes:
    ds.compress(syntax)
    return _bytes(ds)


def _jpeg_encapsulated(ds: Dataset, syntax, image: np.ndarray, **encode) -> bytes:
    imagecodecs = pytest.importorskip("imagecodecs")
    ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(image, **encode)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax == JPEGBaseline8Bit and image.ndim == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    return _bytes(ds)


def _reference(data: bytes) -> np.ndarray:
    """pydicom's own pixels (first frame), with its pixel-data plugins."""
    return np.asarray(pydicom.dcmread(io.BytesIO(data)).pixel_array)


def _pack(tmp_path, files: dict[str, bytes], dicom: DicomOptions = DicomOptions(), **options):
    folder = tmp_path / "data"
    for name, data in files.items():
        write(str(folder / name), data)
    out = str(tmp_path / "s.lmdb")
    summary = fastload.pack(str(folder), out, options=PackOptions(
        overwrite=True, progress=False, workers=1, dicom=dicom, **options))
    return summary, fastload.open_store(out)


def _gray12(seed: int = 0, h: int = 48, w: int = 40) -> np.ndarray:
    return pixels(h, w, 1, seed=seed, dtype=np.uint16) >> 4  # 12-bit values in uint16


# --- each transfer syntax the extra decodes: values equal pydicom's pixel_array ----------------

SYNTAXES = {
    "native": lambda ds, im: _bytes(ds),
    "rle": lambda ds, im: _compressed(ds, RLELossless),
    "jpeg-ls": lambda ds, im: _compressed(ds, JPEGLSLossless),
    "jpeg2000": lambda ds, im: _compressed(ds, JPEG2000Lossless),
    "jpeg-lossless-p14": lambda ds, im: _jpeg_encapsulated(ds, JPEGLosslessSV1, im, lossless=True,
                                                          bitspersample=12),
}


@pytest.mark.parametrize("syntax", sorted(SYNTAXES))
def test_every_syntax_packs_pydicoms_values(tmp_path, syntax):
    image = _gray12(1)
    data = SYNTAXES[syntax](_dataset(image), image)
    summary, store = _pack(tmp_path, {"a.dcm": data})
    assert summary.packed == 1, summary.skipped
    record = store.decode(0)
    assert record.dtype == np.uint16 and record.shape == (48, 40, 1)
    np.testing.assert_array_equal(record[:, :, 0], _reference(data))
    np.testing.assert_array_equal(record[:, :, 0], image)  # lossless syntaxes: the source too
    assert store.metadata["dicom_transfer_syntax"][0] == str(pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID)


def test_jpeg_baseline_colour_and_12bit_extended(tmp_path):
    rgb = pixels(32, 40, 3, seed=2)
    baseline = _jpeg_encapsulated(_dataset(rgb, bits_stored=8), JPEGBaseline8Bit, rgb, level=95)
    gray = _gray12(3)
    extended = _jpeg_encapsulated(_dataset(gray), JPEGExtended12Bit, gray, level=95, bitspersample=12)
    summary, store = _pack(tmp_path, {"a.dcm": baseline, "b.dcm": extended})
    assert summary.packed == 2, summary.skipped
    np.testing.assert_array_equal(store.decode(0), _reference(baseline))  # YBR -> RGB as pydicom
    # pydicom's permissive plugins lack 12-bit JPEG; libjpeg-turbo (imagecodecs) decodes it.
    twelve = store.decode(1)
    assert twelve.dtype == np.uint16 and np.abs(twelve[:, :, 0].astype(int) - gray).max() <= 32  # lossy


# --- the policy ------------------------------------------------------------------------------------


def test_monochrome1_is_inverted_within_bits_stored(tmp_path):
    image = _gray12(4)
    data = _bytes(_dataset(image, photometric="MONOCHROME1", WindowCenter=1000, WindowWidth=400))
    _, store = _pack(tmp_path, {"a.dcm": data})
    np.testing.assert_array_equal(store.decode(0)[:, :, 0], 4095 - _reference(data))
    meta = store.metadata
    assert meta["dicom_photometric"][0] == "MONOCHROME1"
    assert meta["dicom_window_center"][0] == 4095 - 1000  # in the record's (inverted) values


def test_ct_rescale_gives_hounsfield_units_as_int16(tmp_path):
    stored = _gray12(5)
    data = _bytes(_dataset(stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                           WindowWidth=400, Modality="CT"))
    _, store = _pack(tmp_path, {"ct.dcm": data})
    record = store.decode(0)
    assert record.dtype == np.int16
    np.testing.assert_array_equal(record[:, :, 0], _reference(data).astype(np.int32) - 1024)
    meta = store.metadata
    assert (meta["dicom_rescale_slope"][0], meta["dicom_rescale_intercept"][0]) == (1.0, -1024.0)
    assert (meta["dicom_window_center"][0], meta["dicom_window_width"][0]) == (40.0, 400.0)
    assert meta["dicom_modality"][0] == "CT" and meta["dicom_window_applied"][0] == ""


def test_signed_pixels_stay_signed(tmp_path):
    values = (_gray12(6).astype(np.int32) - 2048).astype(np.int16)
    data = _bytes(_dataset(values, signed=True))
    _, store = _pack(tmp_path, {"a.dcm": data})
    record = store.decode(0)
    assert record.dtype == np.int16
    np.testing.assert_array_equal(record[:, :, 0], _reference(data))


def test_fractional_slope_gives_float32_real_values(tmp_path):
    stored = _gray12(7)
    data = _bytes(_dataset(stored, RescaleSlope="0.25", RescaleIntercept="-10.5"))
    _, store = _pack(tmp_path, {"a.dcm": data})
    record = store.decode(0)
    assert record.dtype == np.float32
    expected = (_reference(data) * 0.25 - 10.5).astype(np.float32)
    np.testing.assert_array_equal(record[:, :, 0], expected)


@pytest.mark.parametrize("window", ["file", (40.0, 400.0)])
def test_windowing_applied_gives_uint8_by_the_dicom_formula(tmp_path, window):
    stored = _gray12(8)
    data = _bytes(_dataset(stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=300,
                           WindowWidth=2000))
    _, store = _pack(tmp_path, {"a.dcm": data}, DicomOptions(window=window))
    center, width = (300.0, 2000.0) if window == "file" else window
    hu = _reference(data).astype(np.float64) - 1024
    expected = np.rint(np.clip((hu - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)
    record = store.decode(0)
    assert record.dtype == np.uint8
    np.testing.assert_array_equal(record[:, :, 0], expected.astype(np.uint8))
    assert store.metadata["dicom_window_applied"][0] == f"{center:g},{width:g},LINEAR"


def test_ybr_full_becomes_rgb_as_pydicom_gives_it(tmp_path):
    rgb = pixels(24, 30, 3, seed=9)
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[:, :, [0, 2, 1]]  # Y, Cb, Cr
    data = _bytes(_dataset(np.ascontiguousarray(ycc), bits_stored=8, photometric="YBR_FULL"))
    _, store = _pack(tmp_path, {"a.dcm": data})
    record = store.decode(0)
    np.testing.assert_array_equal(record, _reference(data))
    assert np.abs(record.astype(int) - rgb).max() <= 3  # it is RGB again


def test_multi_frame_first_or_every_frame(tmp_path):
    frames = np.stack([_gray12(s) for s in range(3)])
    rgb = np.stack([pixels(20, 24, 3, seed=s) for s in range(2)])
    files = {"gray.dcm": _bytes(_dataset(frames, frames=3)),
             "rgb.dcm": _bytes(_dataset(rgb, bits_stored=8, frames=2))}  # this one aborted packs
    summary, store = _pack(tmp_path, files)
    assert summary.packed == 2 and len(store) == 2
    np.testing.assert_array_equal(store.decode(0)[:, :, 0], frames[0])
    np.testing.assert_array_equal(store.decode(1), rgb[0])
    summary, store = _pack(tmp_path / "all", files, DicomOptions(frames="all"))
    assert len(store) == 5 and not summary.skipped
    for i in range(3):
        np.testing.assert_array_equal(store.decode(i)[:, :, 0], frames[i])
    np.testing.assert_array_equal(store.decode(4), rgb[1])
    assert store.metadata["dicom_frame"].tolist() == [0, 1, 2, 0, 1]
    assert store.paths[1].endswith("gray.dcm [frame 1]")


def test_dual_personality_tiff_preamble_and_preambleless_files(tmp_path):
    image = _gray12(10)
    tiff_preamble = _bytes(_dataset(image), preamble=b"II*\x00\x08\x00\x00\x00")
    assert images.sniff_format(tiff_preamble) == "dicom"
    buf = io.BytesIO()
    ds = _dataset(image)
    del ds.file_meta  # a bare data set: no preamble, no DICM, no file meta
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    bare = buf.getvalue()
    assert images.sniff_format(bare) == "dicom"
    summary, store = _pack(tmp_path, {"a.dcm": tiff_preamble, "b.dcm": bare})
    assert summary.packed == 2, summary.skipped
    for i in range(2):
        np.testing.assert_array_equal(store.decode(i)[:, :, 0], image)


# --- JPEG 2000 codestreams kept for GPU decoding -----------------------------------------------


def test_codestream_payload_keeps_the_jpeg2000_stream_and_decodes_to_the_policy(tmp_path):
    stored = _gray12(11)
    ds = _dataset(stored, RescaleSlope=1, RescaleIntercept=-1024, photometric="MONOCHROME1")
    data = _compressed(ds, JPEG2000Lossless)
    _, pixels_store = _pack(tmp_path / "p", {"a.dcm": data})
    _, store = _pack(tmp_path / "c", {"a.dcm": data}, DicomOptions(payload="codestream"))
    assert store.header.encodings == ["jpeg2000"]
    np.testing.assert_array_equal(store.decode(0), pixels_store.decode(0))
    payload, _ = store.get(0)
    codestream, extra = jpeg2000.unwrap(payload)
    frame = next(pydicom.encaps.generate_frames(pydicom.dcmread(io.BytesIO(data)).PixelData,
                                                number_of_frames=1))
    assert codestream == frame  # byte for byte: a GPU decoder reads the stored values
    policy = PixelPolicy.from_json(extra["policy"])
    assert (policy.dtype, policy.intercept, policy.invert) == ("int16", -1024.0, True)


# --- resizing keeps 16 bits ------------------------------------------------------------------


def test_max_side_keeps_16_bits_for_dicom_png_and_tiff(tmp_path):
    gray = pixels(80, 64, 1, seed=12, dtype=np.uint16)
    tiff = images_tiff16(gray)
    files = {"a.dcm": _bytes(_dataset(gray, bits_stored=16)), "b.png": png16(gray), "c.tif": tiff}
    _, store = _pack(tmp_path, files, max_side=40)
    expected = cv2.resize(gray, (32, 40), interpolation=cv2.INTER_AREA)
    for i in range(3):
        record = store.decode(i)
        assert record.dtype == np.uint16 and record.shape == (40, 32, 1), store.paths[i]
        np.testing.assert_array_equal(record[:, :, 0], expected)
    assert store.header.encodings == ["png"]


def images_tiff16(gray: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".tif", gray)
    assert ok
    return buf.tobytes()


# --- no input aborts a pack ------------------------------------------------------------------


def test_good_jpeg_packs_beside_every_bad_or_odd_dicom(tmp_path):
    good = _bytes(_dataset(_gray12(13)))
    no_pixels = _dataset(_gray12(13))
    del no_pixels.PixelData
    odd_photometric = _dataset(_gray12(13), photometric="HSV")
    huge = _dataset(_gray12(13))
    huge.Rows = huge.Columns = 60000
    files = {
        "a_good.jpg": jpeg(),
        "truncated.dcm": good[:-100],
        "garbage.dcm": good[:132] + os.urandom(300),
        "no_pixels.dcm": _bytes(no_pixels),
        "odd_photometric.dcm": _bytes(odd_photometric),
        "huge.dcm": _bytes(huge),
        "header_only.dcm": good[:200],
    }
    summary, store = _pack(tmp_path, files)
    assert store.paths[0].endswith("a_good.jpg") and summary.packed == 1
    reasons = {os.path.basename(s.path): s.reason for s in summary.skipped}
    assert set(reasons) == set(files) - {"a_good.jpg"}, reasons
    assert "no pixel data" in reasons["no_pixels.dcm"]
    assert "more than the limit" in reasons["huge.dcm"]
    assert "HSV" in reasons["odd_photometric.dcm"]
    with pytest.raises(PackError, match=r"truncated\.dcm|garbage\.dcm|header_only\.dcm|huge\.dcm"):
        _pack(tmp_path / "strict", files, strict=True)


def test_unexpected_error_while_reading_skips_that_file(tmp_path, monkeypatch):
    import importlib

    pack_module = importlib.import_module("fastload.pack.worker")  # fastload.pack is also the function
    def explode(data, path, options, max_pixels):
        raise ZeroDivisionError("a decoder bug")

    monkeypatch.setattr(pack_module.dicom, "read_frames", explode)  # in-process: workers=1
    summary, store = _pack(tmp_path, {"a.jpg": jpeg(), "b.dcm": _bytes(_dataset(_gray12(14)))})
    assert len(store) == 1
    [skipped] = summary.skipped
    assert skipped.reason == "unexpected ZeroDivisionError while reading it: a decoder bug"


def test_cli_dicom_options(tmp_path, capsys):
    stored = _gray12(15)
    write(str(tmp_path / "d" / "a.dcm"), _bytes(_dataset(stored, RescaleIntercept=-1024, RescaleSlope=1)))
    out = str(tmp_path / "s.lmdb")
    assert main(["pack", str(tmp_path / "d"), "-o", out, "-q", "--workers", "1",
                 "--dicom-window=-600,1500", "--dicom-frames", "all"]) == 0
    store = fastload.open_store(out)
    assert store.decode(0).dtype == np.uint8
    assert store.header.options["dicom"] == {"frames": "all", "window": [-600.0, 1500.0],
                                             "payload": "pixels"}
