"""JPEG 2000 DICOM throughput: packing, and reading records back (CPU), for both DICOM payloads.

    python benchmarks/dicom_jpeg2000.py --count 48 --size 1024 --workers 2

Writes ``count`` 12-bit CT-like DICOMs (JPEG 2000 lossless, HU rescale, as pydicom + OpenJPEG
encode them), then times ``fastload.pack`` with ``--dicom-payload pixels`` (the policy's
int16 HU values as .npy; uint16 sources give 16-bit PNG) and ``codestream`` (the JPEG 2000
stream kept), and reads every record back with ``store.decode`` (one process), and with DALI's
CPU decoder on the kept codestreams (stored values only: the policy is the pipeline's job).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastload  # noqa: E402
from fastload import DicomOptions, PackOptions  # noqa: E402


def _write(folder: str, count: int, size: int, unsigned_png: bool) -> int:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    total = 0
    for i in range(count):
        body = 1000 + 900 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / (0.08 + 0.01 * (i % 5)))
        noise = rng.normal(0, 25, (size, size)).astype(np.float32)
        stored = np.clip(body + 300 * np.sin(9 * x + i) * np.cos(7 * y) + noise, 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CT", size, size, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        if not unsigned_png:
            ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = stored.tobytes()
        ds.compress(JPEG2000Lossless)
        path = os.path.join(folder, f"{i:05d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        total += os.path.getsize(path)
    del pydicom
    return total


def _read_all(store) -> float:
    start = time.perf_counter()
    for i in range(len(store)):
        store.decode(i)
    return time.perf_counter() - start


def _dali_cpu(store, threads: int) -> float:
    from nvidia.dali import fn, pipeline_def, types

    payloads = [np.frombuffer(store.read(i), np.uint8) for i in range(len(store))]
    batch = 16

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None)
    def pipe():
        data = fn.external_source(source=lambda info: payloads[info.idx_in_epoch % len(payloads)],
                                  batch=False)
        return fn.decoders.image(data, device="cpu", output_type=types.ANY_DATA, dtype=types.UINT16)

    p = pipe()
    p.build()
    p.run()  # warm-up
    rounds = max(1, len(payloads) // batch)
    start = time.perf_counter()
    for _ in range(rounds):
        p.run()
    return (time.perf_counter() - start) / (rounds * batch) * len(payloads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unsigned", action="store_true",
                        help="no HU rescale: uint16 records, stored as 16-bit PNG with 'pixels'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "dicoms")
        nbytes = _write(folder, args.count, args.size, args.unsigned)
        print(f"{args.count} JPEG 2000 DICOMs of {args.size}x{args.size} (12-bit), "
              f"{nbytes / 1e6:.1f} MB, workers={args.workers}")
        for payload in ("pixels", "codestream"):
            out = os.path.join(tmp, f"{payload}.lmdb")
            options = PackOptions(workers=args.workers, progress=False, overwrite=True,
                                  dicom=DicomOptions(payload=payload))
            summary = fastload.pack(folder, out, options=options)
            store = fastload.open_store(out)
            seconds = _read_all(store)
            line = (f"  {payload:10s} pack {summary.images_per_second:6.1f} img/s "
                    f"({summary.bytes_out / 1e6:.1f} MB stored, {store.header.encodings}, "
                    f"{store.header.dtypes}); store.decode {len(store) / seconds:6.1f} img/s")
            if payload == "codestream":
                try:
                    dali = _dali_cpu(store, args.workers)
                    line += f"; DALI CPU decode (stored values) {len(store) / dali:6.1f} img/s"
                except ImportError:
                    pass
            print(line, flush=True)
            store.close()


if __name__ == "__main__":
    main()
