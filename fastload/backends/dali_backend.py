"""The DALI backend: a DALI pipeline reads the store, decodes (nvJPEG on the GPU, libjpeg-turbo
on the CPU) and augments; batches reach torch with one copy out of DALI's reused buffers.

The pipeline is built once per Loader and fed, epoch by epoch, the planned batches through a
batch-mode ``fn.external_source`` that runs in the pipeline's thread: reading a record from an
LMDB/HDF5 store is a ~10-100 µs copy out of a memory map, so worker processes would only add
transfer costs (measured: see benchmarks/RESULTS.md). When the first operator is a
RandomResizedCrop, it is fused into the decoder (``decoders.image_random_crop``): only the crop
window is decoded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import MissingExtraError
from ..ops import BatchOp, CustomOp, Flip, Normalize, Op, RandomResizedCrop
from ..ops.normalize import max_value, resolve_mean_std
from .base import BackendConfig

__all__ = ["DaliBackend", "DaliContext", "StoreFeed"]


def _dali() -> Any:
    try:
        import nvidia.dali as dali
    except ImportError:
        raise MissingExtraError("nvidia-dali", "cuda13", "backend='dali'") from None
    return dali


@dataclass(frozen=True)
class DaliContext:
    """What operators' ``dali()`` methods may read while the pipeline is defined.

    Attributes:
        device: "cpu" or "gpu": where the images DataNode lives.
        channels: channels per image.
        max_value: the pixel type's full-scale value (255, 65535, or 1.0 for floats).
        seed: the pipeline seed (DALI's random operators derive their streams from it).
        sample_ids: per-sample int64 ``[seed, epoch, record]`` DataNode, for custom operators.
        layout: the output layout asked of the loader ("NCHW" or "NHWC").
        output_dtype: "float32", "float16" or "uint8".
    """

    device: str
    channels: int
    max_value: float
    seed: int
    sample_ids: Any = None
    layout: str = "NCHW"
    output_dtype: str = "float32"


class StoreFeed:
    """The external-source callback: the next planned batch's payloads, labels and sample ids.

    Raises StopIteration at the end of the epoch. An exception raised while reading (a corrupt
    record, a vanished store) is kept in ``error`` so the backend re-raises it as it was, not
    wrapped in DALI's generic message.
    """

    def __init__(self, store: Any, raw: bool, verify: bool, seed: int, with_ids: bool) -> None:
        self.store = store
        self.with_ids = with_ids
        self.raw = raw
        self.verify = verify
        self.seed = seed
        self.labels = np.asarray(store.labels, dtype=np.int64)
        self.shapes = store.table.shapes if raw and hasattr(store, "table") else None
        self.batches: Sequence[np.ndarray] = []
        self.epoch = 0
        self.position = 0
        self.error: BaseException | None = None

    def arm(self, batches: Sequence[np.ndarray], epoch: int) -> None:
        self.batches, self.epoch, self.position, self.error = batches, epoch, 0, None

    def _payload(self, index: int) -> np.ndarray:
        if self.raw:
            array, _ = self.store.get(index)
            return np.asarray(array)
        return np.frombuffer(self.store.read(index, self.verify), dtype=np.uint8)

    def __call__(self) -> tuple[list[np.ndarray], ...]:
        if self.position >= len(self.batches):
            raise StopIteration
        batch = self.batches[self.position]
        self.position += 1
        try:
            payloads = [self._payload(int(i)) for i in batch]
        except BaseException as exc:
            self.error = exc
            raise
        labels = [self.labels[int(i) : int(i) + 1] for i in batch]
        if not self.with_ids:
            return payloads, labels
        ids = [np.array([self.seed, self.epoch, int(i)], dtype=np.int64) for i in batch]
        return payloads, labels, ids


def _fusable_flip(ops: Sequence[Op], i: int) -> bool:
    op = ops[i]
    return (isinstance(op, Flip) and op.horizontal and not op.vertical
            and i + 1 < len(ops) and isinstance(ops[i + 1], Normalize))


class DaliBackend:
    """Batches from a store through a DALI pipeline (GPU when ``config.device == "cuda"``)."""

    def __init__(self, store: Any, ops: Sequence[Op], config: BackendConfig) -> None:
        _dali()
        self.store = store
        self.ops = list(ops)
        self.config = config
        self.raw = store.header.payload == "raw"
        dtypes = store.header.dtypes or ["uint8"]
        self.pixel_dtype = np.dtype("uint16" if "uint16" in dtypes else dtypes[0])
        # Custom operators seed their generators from [seed, epoch, record], as the torch backend does.
        with_ids = any(isinstance(op, (CustomOp, BatchOp)) for op in self.ops)
        self.feed = StoreFeed(store, self.raw, config.verify, config.seed, with_ids)
        self._pipe: Any = None
        self._clean = True
        if config.device == "cuda":
            self.torch_device = torch.device("cuda", config.device_id)
        else:
            self.torch_device = torch.device("cpu")

    # --- pipeline definition ------------------------------------------------------------------
    def _decode(self, data: Any, ops: list[Op]) -> tuple[Any, list[Op]]:
        from nvidia.dali import fn, types

        gpu = self.config.device == "cuda"
        if self.raw:
            return (data.gpu() if gpu else data), ops
        channels = self.config.channels
        out_type = types.RGB if channels == 3 else (types.GRAY if channels == 1 else types.ANY_DATA)
        extra = {"dtype": types.UINT16} if self.pixel_dtype == np.uint16 else {}
        device = "mixed" if gpu else "cpu"
        if gpu and self.config.hw_decoder_load is not None:
            extra["hw_decoder_load"] = float(self.config.hw_decoder_load)
        if ops and isinstance(ops[0], RandomResizedCrop):
            crop = ops[0]
            images = fn.decoders.image_random_crop(
                data, device=device, output_type=out_type, random_area=list(crop.scale),
                random_aspect_ratio=list(crop.ratio), num_attempts=10, **extra)
            size = crop.size if isinstance(crop.size, tuple) else (crop.size, crop.size)
            images = fn.resize(images, size=list(size), antialias=True)
            return images, ops[1:]
        return fn.decoders.image(data, device=device, output_type=out_type, **extra), ops

    def _normalize(self, images: Any, op: Normalize | None, mirror: Any, ctx: DaliContext) -> Any:
        from nvidia.dali import fn, types

        layout = "CHW" if self.config.layout == "NCHW" else "HWC"
        if self.config.output_dtype == "uint8" or op is None:
            if mirror is not None:
                images = fn.flip(images, horizontal=mirror)
            if layout == "CHW":
                images = fn.transpose(images, perm=[2, 0, 1])
            if self.config.output_dtype != "uint8":
                dtype = types.FLOAT16 if self.config.output_dtype == "float16" else types.FLOAT
                images = fn.cast(images, dtype=dtype)
            return images
        mean, std = resolve_mean_std(op.mean, op.std, ctx.channels)
        dtype = types.FLOAT16 if self.config.output_dtype == "float16" else types.FLOAT
        kwargs = {"mirror": mirror} if mirror is not None else {}
        return fn.crop_mirror_normalize(
            images, dtype=dtype, output_layout=layout, mean=(mean * ctx.max_value).tolist(),
            std=(std * ctx.max_value).tolist(), **kwargs)

    def _define(self) -> Any:
        from nvidia.dali import fn, pipeline_def, types

        cfg = self.config
        gpu = cfg.device == "cuda"

        @pipeline_def(batch_size=cfg.batch_size, num_threads=max(1, cfg.num_threads),
                      device_id=cfg.device_id if gpu else None, seed=cfg.seed,
                      prefetch_queue_depth=max(1, cfg.prefetch))
        def pipeline():
            outputs = 3 if self.feed.with_ids else 2
            data, labels, *ids = fn.external_source(
                source=self.feed, num_outputs=outputs, batch=True,
                dtype=[self.pixel_dtype_dali() if self.raw else types.UINT8, types.INT64, types.INT64][:outputs],
                layout=["HWC" if self.raw else "", "", ""][:outputs])
            images, ops = self._decode(data, list(self.ops))
            ctx = DaliContext(device="gpu" if gpu else "cpu", channels=cfg.channels,
                              max_value=max_value(self.pixel_dtype), seed=cfg.seed,
                              sample_ids=ids[0] if ids else None,
                              layout=cfg.layout, output_dtype=cfg.output_dtype)
            normalize, mirror, i = None, None, 0
            while i < len(ops):
                if _fusable_flip(ops, i):
                    mirror = fn.random.coin_flip(probability=ops[i].p)
                elif isinstance(ops[i], Normalize) and i == len(ops) - 1:
                    normalize = ops[i]
                else:
                    images = ops[i].dali(images, ctx)
                i += 1
            images = self._normalize(images, normalize, mirror, ctx)
            return images, (labels.gpu() if gpu else labels)

        return pipeline()

    def pixel_dtype_dali(self) -> Any:
        from nvidia.dali import types

        return {np.dtype("uint8"): types.UINT8, np.dtype("uint16"): types.UINT16,
                np.dtype("float32"): types.FLOAT}[self.pixel_dtype]

    def _pipeline(self) -> Any:
        if self._pipe is None or not self._clean:
            self._pipe = self._define()
            self._pipe.build()
            self._clean = True
        return self._pipe

    # --- iteration ----------------------------------------------------------------------------
    def _to_torch(self, tensor_list: Any, dtype: torch.dtype) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = tensor_list.as_tensor()
        out = torch.empty(dense.shape(), dtype=dtype, device=self.torch_device)
        stream = torch.cuda.current_stream(self.torch_device) if self.torch_device.type == "cuda" else None
        feed_ndarray(dense, out, cuda_stream=stream)
        return out

    def iterate(self, batches: Sequence[np.ndarray], epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not len(batches):
            return
        pipe = self._pipeline()
        self.feed.arm(batches, epoch)
        self._clean = False  # until the epoch runs to its end, the pipeline holds prefetched work
        image_dtype = {"float32": torch.float32, "float16": torch.float16,
                       "uint8": torch.uint8}[self.config.output_dtype]
        while True:
            try:
                images, labels = pipe.run()
            except StopIteration:
                pipe.reset()
                self._clean = True
                return
            except Exception as exc:
                if self.feed.error is not None:
                    raise self.feed.error from exc
                raise
            yield self._to_torch(images, image_dtype), self._to_torch(labels, torch.int64).view(-1)

    def close(self) -> None:
        self._pipe = None
