"""Multi-channel samples end to end: .npy and TIFF arrays, channel files grouped by a CSV,
per-channel statistics, and 6-channel 16-bit batches from the loader."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from imagefiles import encode, npy, pixels, png16, write

import fastload
from fastload.cli import main
from fastload.codecs import images
from fastload.errors import BadInputError
from fastload.loader import dali_available
from fastload.sources import CsvColumns, scan_csv

CHANNELS = 6
QUIET = fastload.PackOptions(workers=1, progress=False)


def _tiff(array: np.ndarray, **params) -> bytes:
    tifffile = pytest.importorskip("tifffile")
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **params)
    return buf.getvalue()


def _sample(i: int, height: int = 32, dtype: type = np.uint16) -> np.ndarray:
    return pixels(height, 40, CHANNELS, seed=i, dtype=dtype)


def _pack(folder, out, options: fastload.PackOptions = QUIET) -> fastload.PackSummary:
    return fastload.pack(str(folder), str(out), options=options)


# --- the array layout rule ---------------------------------------------------------------


@pytest.mark.parametrize("shape, layout", [
    ((40, 48), (40, 48, 1, False)),
    ((40, 48, 6), (40, 48, 6, False)),
    ((6, 40, 48), (40, 48, 6, True)),
    ((1, 6, 40, 48), (40, 48, 6, True)),
    ((24, 24, 3), (24, 24, 3, False)),  # 24 > 16: never channels-first
    ((8, 8, 8), (8, 8, 8, False)),  # C not smaller than H and W: channels-last
])
def test_array_layout_rule(shape, layout):
    assert images.array_layout(shape) == layout


@pytest.mark.parametrize("shape", [(100, 100, 100), (2, 3, 4, 5), (7,)])
def test_array_layouts_that_cannot_be_told_are_refused(shape):
    with pytest.raises(BadInputError, match="array of shape"):
        images.array_layout(shape)


# --- per-sample arrays -------------------------------------------------------------------


def test_npy_folder_packs_every_channel_exactly(tmp_path):
    arrays = [_sample(i, height=24 + 8 * i) for i in range(3)]
    write(str(tmp_path / "data" / "a" / "0_hwc.npy"), npy(arrays[0]))
    write(str(tmp_path / "data" / "a" / "1_chw.npy"), npy(np.moveaxis(arrays[1], -1, 0).copy()))
    write(str(tmp_path / "data" / "b" / "big_endian.npy"), npy(arrays[2].astype(">u2")))
    summary = _pack(tmp_path / "data", tmp_path / "s.lmdb")
    assert summary.packed == 3 and not summary.skipped
    store = fastload.open_store(str(tmp_path / "s.lmdb"))
    assert store.channels == CHANNELS and store.header.encodings == ["npy"]
    assert store.header.dtypes == ["uint16"]
    for i, expected in enumerate(arrays):
        image = store.decode(i)
        assert image.dtype == np.uint16 and np.array_equal(image, expected)
        assert tuple(store.table.shapes[i]) == expected.shape
    # The payload is the file's own bytes, unchanged.
    with open(os.path.join(str(tmp_path / "data"), "a", "1_chw.npy"), "rb") as f:
        assert store.read(1) == f.read()


@pytest.mark.parametrize("params, layout", [
    ({"photometric": "minisblack", "planarconfig": "contig"}, "hwc"),  # 6 samples per pixel
    ({"photometric": "minisblack", "planarconfig": "separate"}, "chw"),  # 6 sample planes
    ({"photometric": "minisblack"}, "pages"),  # one page per channel
])
def test_tiff_folder_packs_every_channel_exactly(tmp_path, params, layout):
    arrays = [_sample(i) for i in range(2)]
    for i, array in enumerate(arrays):
        data = array if layout == "hwc" else np.moveaxis(array, -1, 0).copy()
        write(str(tmp_path / "data" / f"{i}.tif"), _tiff(data, **params))
    summary = _pack(tmp_path / "data", tmp_path / "s.h5", options=fastload.PackOptions(
        format="hdf5", workers=1, progress=False))
    assert summary.packed == 2 and not summary.skipped
    store = fastload.open_store(str(tmp_path / "s.h5"))
    assert store.channels == CHANNELS and store.header.encodings == ["tiff"]
    for i, expected in enumerate(arrays):
        assert np.array_equal(store.decode(i), expected)


def test_float32_arrays_keep_their_values(tmp_path):
    array = _sample(0).astype(np.float32) / 65535
    write(str(tmp_path / "data" / "x.npy"), npy(array))
    write(str(tmp_path / "data" / "nan.npy"), npy(np.full((24, 24, 6), np.nan, np.float32)))
    summary = _pack(tmp_path / "data", tmp_path / "s.lmdb")
    assert [s.reason for s in summary.skipped] == ["float pixels include NaN or infinity"]
    store = fastload.open_store(str(tmp_path / "s.lmdb"))
    assert store.header.dtypes == ["float32"] and np.array_equal(store.decode(0), array)
    assert np.allclose(store.header.stats["mean"], array[::1].reshape(-1, 6).mean(0), atol=0.02)


class _Trap:
    """Unpickling this calls open(path, "w"): the file appears if anything unpickles it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickled_npy_is_refused_and_never_unpickled(tmp_path):
    marker = str(tmp_path / "unpickled")
    data = npy(np.array([_Trap(marker)], dtype=object), allow_pickle=True)
    write(str(tmp_path / "data" / "evil.npy"), data)
    write(str(tmp_path / "data" / "good.npy"), npy(_sample(0)))
    summary = _pack(tmp_path / "data", tmp_path / "s.lmdb")
    assert summary.packed == 1
    [skipped] = summary.skipped
    assert skipped.path.endswith("evil.npy") and "pickle" in skipped.reason
    with pytest.raises(BadInputError, match="never unpickles"):
        images.decode(data)
    assert not os.path.exists(marker)


def test_npy_header_checked_before_loading(tmp_path):
    data = npy(_sample(0))
    with pytest.raises(BadInputError, match="more than the limit"):
        images.probe(data, "x.npy", max_pixels=100)
    with pytest.raises(BadInputError, match="truncated .npy"):
        images.probe(data[:-4], "x.npy")
    with pytest.raises(BadInputError, match="unsupported array dtype int64"):  # int16 is kept (DICOM HU)
        images.probe(npy(np.zeros((24, 24), np.int64)), "x.npy")


def test_max_side_reencodes_arrays_asnpy(tmp_path):
    write(str(tmp_path / "data" / "x.npy"), npy(_sample(0, height=48)))
    fastload.pack(str(tmp_path / "data"), str(tmp_path / "s.lmdb"),
                  options=fastload.PackOptions(workers=1, progress=False, max_side=20))
    store = fastload.open_store(str(tmp_path / "s.lmdb"))
    assert store.header.encodings == ["npy"] and store.decode(0).shape == (20, 17, CHANNELS)


# --- channel files grouped by a CSV ------------------------------------------------------


def _channel_csv(root, samples: list[np.ndarray], columns: list[str]) -> str:
    """One 16-bit gray PNG per channel per sample, and a CSV naming them by row."""
    lines = [",".join([*columns, "label"])]
    for i, sample in enumerate(samples):
        names = []
        for c in range(sample.shape[2]):
            names.append(f"s{i}_c{c}.png")
            write(os.path.join(root, names[-1]), png16(sample[:, :, c]))
        lines.append(",".join([*names, "pos" if i % 2 else "neg"]))
    path = os.path.join(root, "channels.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_channel_csv_packs_stacked_samples_from_the_cli(tmp_path, capsys):
    root = str(tmp_path / "data")
    samples = [_sample(i) for i in range(3)]
    columns = ["dapi", "gfp", "rfp", "cy5", "bf", "mito"]
    manifest = _channel_csv(root, samples, columns)
    out = str(tmp_path / "s.lmdb")
    code = main(["pack", root, "--labels", manifest, "--channel-columns", ",".join(columns),
                 "-o", out, "-q", "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    store = fastload.open_store(out)
    assert len(store) == 3 and store.classes == ["neg", "pos"] and store.labels.tolist() == [0, 1, 0]
    assert store.channels == CHANNELS and store.header.encodings == ["npy"]
    for i, expected in enumerate(samples):
        assert np.array_equal(store.decode(i), expected)
    assert " + " in store.paths[0] and store.paths[0].endswith("s0_c5.png")
    capsys.readouterr()
    assert main(["inspect", out, "--json"]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert len(profile["mean"]) == len(profile["std"]) == CHANNELS
    stacked = np.concatenate([s.reshape(-1, CHANNELS) for s in samples]) / 65535
    assert np.allclose(profile["mean"], stacked.mean(0), atol=0.01)
    assert np.allclose(profile["std"], stacked.std(0), atol=0.01)


def test_channel_columns_named_ch1_to_chN_are_found(tmp_path):
    root = str(tmp_path / "data")
    manifest = _channel_csv(root, [_sample(0)], [f"ch{c}" for c in (1, 2, 3, 4, 5, 6)])
    [item] = scan_csv(manifest, root).items
    assert [os.path.basename(p) for p in item.channel_paths] == [f"s0_c{c}.png" for c in range(6)]
    with pytest.raises(ValueError, match="no column named 'ch7'"):
        scan_csv(manifest, root, CsvColumns(channels=["ch1", "ch7"]))
    with pytest.raises(ValueError, match="not both"):
        CsvColumns(path="ch1", channels=["ch2"])


def test_mismatched_channel_files_are_skipped_with_the_file_named(tmp_path):
    root = str(tmp_path / "data")
    samples = [_sample(i) for i in range(4)]
    manifest = _channel_csv(root, samples, [f"ch{c}" for c in range(1, 7)])
    small = os.path.join(root, "s1_c3.png")
    write(small, png16(pixels(24, 40, 1, seed=9, dtype=np.uint16)))  # sample 1: wrong size
    eight_bit = os.path.join(root, "s2_c5.png")
    write(eight_bit, png16(pixels(32, 40, 1, seed=9, dtype=np.uint8)))  # sample 2: wrong dtype
    os.remove(os.path.join(root, "s3_c0.png"))  # sample 3: missing file
    summary = fastload.pack(root, str(tmp_path / "s.lmdb"), labels=manifest, options=QUIET)
    assert summary.packed == 1
    reasons = {os.path.basename(s.path): s.reason for s in summary.skipped}
    assert "s1_c3.png" in reasons["s1_c3.png"] and "is 40x24 uint16" in reasons["s1_c3.png"]
    assert "same size and dtype" in reasons["s1_c3.png"]
    assert "uint8" in reasons["s2_c5.png"] and "s2_c0.png" in reasons["s2_c5.png"]
    assert "does not exist (column 'ch1')" in reasons["s3_c0.png"]
    assert np.array_equal(fastload.open_store(str(tmp_path / "s.lmdb")).decode(0), samples[0])


# --- the loader ----------------------------------------------------------------------------


def test_torch_loader_yields_six_channel_16bit_batches(tmp_path):
    for i in range(4):
        write(str(tmp_path / "data" / f"c{i % 2}" / f"{i}.npy"), npy(_sample(i, height=40)))
    _pack(tmp_path / "data", tmp_path / "s.lmdb")
    augment = [fastload.ops.RandomResizedCrop(32), fastload.ops.Flip(),
               fastload.ops.Normalize(mean=(0.5,) * CHANNELS, std=(0.25,) * CHANNELS)]
    loader = fastload.Loader(str(tmp_path / "s.lmdb"), batch_size=2, augment=augment,
                             backend="torch", device="cpu", num_threads=0)
    batches = list(loader)
    assert len(batches) == 2
    for images_, labels in batches:
        assert images_.shape == (2, CHANNELS, 32, 32) and labels.shape == (2,)
        for image in images_:
            assert len(np.unique(image.numpy())) > 256  # 16-bit values survived the pipeline


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
@pytest.mark.parametrize("kind", ["npy", "tiff"])
def test_dali_backend_reads_array_stores_like_the_torch_backend(tmp_path, kind):
    for i in range(6):
        sample = _sample(i, height=40)
        data = npy(sample) if kind == "npy" else _tiff(np.moveaxis(sample, 2, 0))
        write(str(tmp_path / "data" / f"c{i % 2}" / f"{i}.{kind if kind == 'npy' else 'tif'}"), data)
    _pack(tmp_path / "data", tmp_path / "s.lmdb")
    augment = [fastload.ops.RandomResizedCrop(24), fastload.ops.Flip(horizontal=True, vertical=True),
               fastload.ops.Normalize(mean=(0.5,) * CHANNELS, std=(0.25,) * CHANNELS)]  # the op lists' ch6

    def batches(backend):
        loader = fastload.Loader(str(tmp_path / "s.lmdb"), batch_size=3, augment=augment, shuffle=True,
                                 backend=backend, device="cpu", num_threads=1)
        return torch.cat([x for x, _ in loader]), loader

    dali, loader = batches("dali")  # every store fastload writes is read by DALI
    assert loader._get_backend().lowered.host  # the feed decodes the arrays, the host stage runs the ops
    assert loader._get_backend().feed_workers >= 2  # decoding in the feed costs milliseconds a record
    ref, auto = batches("auto")
    assert auto.backend_name == "torch"  # on the CPU DALI decodes none of it: the torch backend serves it
    assert dali.shape == ref.shape == (6, CHANNELS, 24, 24)
    # the same crops and flips (drawn from [seed, epoch, record] by both), the same op code
    assert torch.equal(dali, ref)


def test_to_pixel_dtype_keeps_what_values_mean():
    from fastload.pixels import to_pixel_dtype

    eight = np.array([[0, 1, 128, 255]], np.uint8)
    assert to_pixel_dtype(eight, np.uint16).tolist() == [[0, 257, 32896, 65535]]  # DALI's 8 -> 16 bit
    assert to_pixel_dtype(np.array([0, 257, 65535], np.uint16), np.uint8).tolist() == [0, 1, 255]
    assert np.allclose(to_pixel_dtype(eight, np.float32), eight / 255)
    hounsfield = np.array([-1000, 0, 3000], np.int16)
    assert to_pixel_dtype(hounsfield, np.float32).tolist() == [-1000.0, 0.0, 3000.0]  # signed: as is
    assert to_pixel_dtype(eight, np.uint8) is eight


@pytest.mark.parametrize("backend", ["torch"] + (["dali"] if dali_available() else []))
@pytest.mark.parametrize("payload", ["encoded", "raw"])
def test_a_store_mixing_8_and_16_bit_images_is_read_as_16_bit(tmp_path, backend, payload):
    """Each image is brought to the store's one pixel type with its range (8-bit x 257), so a
    Normalize treats them alike: an 8-bit image comes out as it would alone in an 8-bit store,
    and a 16-bit one as alone in a 16-bit store, in both backends."""
    from imagefiles import encode

    eight, sixteen = pixels(24, 24, 3, seed=1), pixels(24, 24, 3, seed=2, dtype=np.uint16)
    write(str(tmp_path / "mixed" / "x" / "a.png"), encode(eight, "PNG"))
    write(str(tmp_path / "mixed" / "x" / "b.png"), png16(sixteen))
    write(str(tmp_path / "only8" / "x" / "a.png"), encode(eight, "PNG"))
    write(str(tmp_path / "only16" / "x" / "b.png"), png16(sixteen))

    def normalized(folder: str) -> torch.Tensor:
        out = str(tmp_path / f"{folder}.lmdb")
        fastload.pack(str(tmp_path / folder), out, options=fastload.PackOptions(workers=1, progress=False,
                                                                                payload=payload))
        loader = fastload.Loader(out, batch_size=2, augment=[fastload.ops.Normalize()], backend=backend,
                                 device="cpu")
        return next(iter(loader))[0]

    mixed = normalized("mixed")
    assert torch.allclose(mixed[0], normalized("only8")[0], atol=1e-5)
    assert torch.allclose(mixed[1], normalized("only16")[0], atol=1e-5)


@fastload.op
def _unchanged(x):
    return x


def _sixteen_bit_png() -> tuple[str, bytes, np.ndarray]:
    image = pixels(24, 24, 3, seed=2, dtype=np.uint16)
    return "b.png", png16(image), np.rint(image / 257.0).astype(np.uint8)


def _float_npy() -> tuple[str, bytes, np.ndarray]:
    image = pixels(24, 24, 3, seed=2, dtype=np.uint16).astype(np.float32) / 60000  # a little above 1 too
    image[0, :4, 0] = (-0.2, 0.5 / 255, 1.5 / 255, 2.0)
    return "b.npy", npy(image), np.clip(np.rint(image * np.float32(255)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("backend", ["torch"] + (["dali"] if dali_available() else []))
@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("source", [_sixteen_bit_png, _float_npy], ids=["16-bit", "float"])
def test_uint8_output_is_scaled_by_the_ranges(tmp_path, backend, tail, source):
    """Not wrapped (torch's cast) nor clamped (DALI's): 16-bit images give round(x / 257), float
    images (0..1) round(x * 255) clipped where a value left 0..1 (a plain cast made every pixel 0);
    in DALI's pipeline or host stage, the torch backend and the batch stage (a custom op at the end)."""
    name, data, expected = source()
    write(str(tmp_path / "d" / "x" / name), data)
    out = str(tmp_path / "d.lmdb")
    fastload.pack(str(tmp_path / "d"), out, options=fastload.PackOptions(workers=1, progress=False))
    augment = [fastload.ops.CenterCrop(24)] + ([_unchanged] if tail else [])
    loader = fastload.Loader(out, batch_size=1, augment=augment, backend=backend, device="cpu",
                             output_dtype="uint8", layout="NHWC")
    got = next(iter(loader))[0][0].numpy()
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@fastload.op
def _brighter(x):  # floats of 8-bit pixels, some past 255
    return x * 1.3 - 10.25


@pytest.mark.parametrize("backend", ["torch"] + (["dali"] if dali_available() else []))
def test_uint8_output_of_floats_an_op_made_of_8_bit_pixels_is_rounded_and_saturated(tmp_path, backend):
    """Floats in 8-bit units (a custom op's): rounded and clipped to 0..255, not truncated or wrapped
    by a cast, nor scaled as a float store's 0..1 would be."""
    image = pixels(24, 24, 3, seed=4)
    write(str(tmp_path / "d" / "x" / "a.png"), encode(image, "PNG"))
    out = str(tmp_path / "d.lmdb")
    fastload.pack(str(tmp_path / "d"), out, options=fastload.PackOptions(workers=1, progress=False))
    loader = fastload.Loader(out, batch_size=1, augment=[fastload.ops.CenterCrop(24), _brighter], backend=backend,
                             device="cpu", output_dtype="uint8", layout="NHWC")
    got = next(iter(loader))[0][0].numpy()
    np.testing.assert_array_equal(got, np.clip(np.rint(image * 1.3 - 10.25), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("dtype", ["int16", "int32", "uint32"])
def test_signed_and_32_bit_array_stores_are_read_by_both_backends_alike(tmp_path, dtype):
    """int16 (Hounsfield units from DICOM) and 32-bit integer arrays: DALI knew only uint8,
    uint16 and float32, and neither OpenCV's nor DALI's resize takes 32-bit integers (those
    stores are read as float32)."""
    y, x = np.mgrid[0:40, 0:48]
    for i in range(2):
        array = ((x + y + i) * (-30 if dtype == "int16" else 1000))[:, :, None].astype(dtype)
        write(str(tmp_path / "d" / "x" / f"{i}.npy"), npy(array))
    out = str(tmp_path / "d.lmdb")
    fastload.pack(str(tmp_path / "d"), out, options=fastload.PackOptions(workers=1, progress=False))
    backends = ["torch"] + (["dali"] if dali_available() else [])
    batches = [next(iter(fastload.Loader(out, batch_size=2, augment="eval", image_size=24, backend=b,
                                          device="cpu")))[0] for b in backends]
    assert all(b.shape == (2, 1, 24, 24) and torch.isfinite(b).all() for b in batches)
    if len(batches) == 2:  # DALI's host stage runs the torch backend's code on float32 pixels
        assert torch.equal(batches[0], batches[1])


def test_npy_values_read_in_place_as_np_load_reads_them():
    """Decoding views the values in the record (no np.load): the same arrays for C and Fortran
    order, planes first or last, and a truncated record is refused by name, not read past its end."""
    for array in (_sample(0), np.moveaxis(_sample(1), 2, 0), np.asfortranarray(np.moveaxis(_sample(2), 2, 0)),
                  np.asfortranarray(_sample(3)), _sample(4).astype(">u2")):
        data = npy(array)
        expected = np.load(io.BytesIO(data))
        expected = np.moveaxis(expected, 0, -1) if expected.shape[0] == CHANNELS else expected
        decoded = images.decode(data)
        assert decoded.flags.c_contiguous and decoded.flags.writeable and decoded.dtype.isnative
        assert np.array_equal(decoded, expected)
    with pytest.raises(BadInputError, match=r"cannot load the .npy: truncated"):
        images.decode(npy(_sample(0))[:-4], "x.npy")


def test_a_window_of_an_array_is_decoded_as_the_whole_array_cut():
    """``decode(window=)`` lays out only the window's values of a ``.npy`` (planes first or last, C
    or Fortran order, big-endian) and cuts other codecs' images: the same values as cutting the
    whole decode; a window outside the image is refused by name."""
    window = (3, 5, 20, 17)
    arrays = (_sample(0), np.moveaxis(_sample(1), 2, 0), np.asfortranarray(np.moveaxis(_sample(2), 2, 0)),
              np.asfortranarray(_sample(3)), _sample(4).astype(">u2"))
    for data in [npy(array) for array in arrays] + [_tiff(np.moveaxis(_sample(5), 2, 0))]:
        cut = images.decode(data, window=window)
        assert cut.shape == (20, 17, CHANNELS) and cut.dtype.isnative
        assert np.array_equal(cut, images.decode(data)[3:23, 5:22])
    for outside in [(20, 0, 20, 17), (0, 0, 33, 1), (-1, 0, 4, 4)]:
        with pytest.raises(BadInputError, match=r"x.npy.*does not lie inside the decoded 32x40 image"):
            images.decode(npy(_sample(0)), "x.npy", window=outside)


def test_an_array_is_laid_out_into_the_buffer_it_is_given():
    """``decode(into=)`` (the DALI feed's slot) lays a .npy's window, or the whole array, out at the
    buffer's start: the values ``decode`` gives alone, for planes first or last, C or Fortran order,
    big-endian; a buffer too small or misaligned for the type is left alone."""
    arrays = (_sample(0), np.moveaxis(_sample(1), 2, 0), np.asfortranarray(np.moveaxis(_sample(2), 2, 0)),
              _sample(4).astype(">u2"), np.moveaxis(_sample(5), 2, 0).astype(np.float32) / 65535)
    for data in [npy(array) for array in arrays]:
        for window in (None, (3, 5, 20, 17)):
            into = np.zeros(1 << 16, np.uint8)
            got = images.decode(data, "x.npy", window, into=into)
            assert got.ctypes.data == into.ctypes.data and got.flags.c_contiguous
            assert np.array_equal(got, images.decode(data, "x.npy", window))
        for unfit in (np.zeros(16, np.uint8), np.zeros(1 << 16, np.uint8)[1:]):
            assert images.decode(data, "x.npy", into=unfit).ctypes.data != unfit.ctypes.data


@pytest.mark.parametrize("payload", ["encoded", "raw"])
def test_a_store_decodes_a_window_of_a_record(tmp_path, payload):
    for i in range(2):
        write(str(tmp_path / "data" / "c" / f"{i}.npy"), npy(np.moveaxis(_sample(i), 2, 0)))
    _pack(tmp_path / "data", tmp_path / "s.lmdb", fastload.PackOptions(workers=1, progress=False, payload=payload))
    store = fastload.open_store(str(tmp_path / "s.lmdb"))
    assert np.array_equal(store.decode(1, (2, 4, 10, 12)), store.decode(1)[2:12, 4:16])
    with pytest.raises(fastload.CorruptRecordError, match=r"record 1 .*does not lie inside"):
        store.decode(1, (30, 0, 10, 10))


def test_windowed_decodes_give_the_pixels_of_whole_ones(tmp_path):
    """A leading random-resized crop decodes only its window of a .npy record (the DALI feed and the
    torch backend): the same batches as a raw store's records, which are cut after a whole read."""
    for i in range(6):
        write(str(tmp_path / "data" / f"c{i % 2}" / f"{i}.npy"), npy(np.moveaxis(_sample(i, height=40), 2, 0)))
    _pack(tmp_path / "data", tmp_path / "npy.lmdb")
    _pack(tmp_path / "data", tmp_path / "raw.lmdb", fastload.PackOptions(workers=1, progress=False, payload="raw"))
    augment = [fastload.ops.RandomResizedCrop(24), fastload.ops.Flip(horizontal=True, vertical=True)]
    backends = ["torch"] + (["dali"] if dali_available() else [])
    batches = {}
    for store in ("npy", "raw"):
        for backend in backends:
            loader = fastload.Loader(str(tmp_path / f"{store}.lmdb"), batch_size=3, augment=augment, shuffle=True,
                                     backend=backend, device="cpu", num_threads=1, output_dtype="uint8")
            batches[store, backend] = torch.cat([x for x, _ in loader])
        if dali_available():  # the DALI feed lays out both stores' records as their windows
            from fastload.backends.dali.feed import feeds_windows

            assert feeds_windows(augment[0], host=True, encoded=False)
    reference = batches["raw", "torch"]
    assert reference.shape == (6, CHANNELS, 24, 24)
    assert all(torch.equal(b, reference) for b in batches.values())
