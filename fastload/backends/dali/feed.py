"""What a feed worker does for one batch: read the records, check them, draw their parameters,
and lay everything out in a shared-memory slot the DALI pipeline reads without a copy.

A slot holds, for ``n`` records::

    spans    int64[n, 4]      payload i is bytes [start, start + length) of the data area, an
                              array payload height x width pixels (encoded: 0, 0)
    params   float32[n, k]    the per-sample augmentation parameters (ParamLayout)
    data     ...              the payloads back to back, each aligned to 64 bytes (arrays of one
                              shape: packed without gaps, one dense NxHxWxC block)

Payloads are the stored encoded bytes (``mode="encoded"``: DALI decodes them) or decoded
``HxWxC`` arrays of one pixel type (``mode="arrays"``: raw stores, ``.npy`` records, images DALI's
decoders cannot read, such as 6-channel TIFFs). With ``windows``, an array record is laid out as the
leading op's window alone (a random-resized crop's, drawn here): a 6-channel ``.npy`` stack is
decoded so and lays out about half its values, a raw record is read whole and its window copied;
the slot carries about half the bytes and the host stage, in the Loader's process, gets windows
it resizes as they are (a raw record's window cut there was a strided view, copied there first).

The spec travels to worker processes as JSON (no pickle); the op list as its config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...ops.base import Op, reads_window
from ...pixels import to_pixel_dtype
from ...stores import Store, open_store
from ...workers.slots import align
from .params import ParamLayout

__all__ = ["FeedSpec", "FeedReader", "slot_layout", "dense_batch", "feeds_windows", "stored_as_is", "MODES",
           "SPAN"]

MODES = ("encoded", "arrays")
SPAN = 4  # int64s per record in a slot's spans: start, length, height, width


def slot_layout(count: int, param_size: int) -> tuple[int, int]:
    """``(params_offset, data_offset)`` in a slot for ``count`` records."""
    params_at = align(8 * SPAN * count)
    return params_at, align(params_at + 4 * count * param_size)


@dataclass(frozen=True)
class FeedSpec:
    """Everything a feed worker needs, as plain JSON-able values.

    Attributes:
        paths: the store's shard paths, in order (a store at a URL: its URL).
        options: ``open_store``'s options for ``paths`` (a store at a URL: its cache settings,
            so every worker reads through the node's one shard cache).
        mode: "encoded" (stored bytes for DALI's decoders) or "arrays" (decoded arrays).
        verify: check each record's checksum.
        seed: the augmentation seed (rank included).
        ops: the config of the ops the DALI pipeline runs (their parameters are drawn here).
        pixel_dtype: "arrays" mode: the dtype every array is brought to.
        channels: "arrays" mode: 1-channel images are repeated to this many channels.
        files: image files read in place (a FileStore) instead of a store at ``paths``.
        shapes: with ``files``: each file's height, width, channels after the decode policy.
        windows: "arrays" mode: records decoded here are decoded as the first op's window (see
            ``feeds_windows``).
    """

    paths: tuple[str, ...]
    mode: str
    verify: bool
    seed: int
    ops: tuple[dict[str, Any], ...]
    pixel_dtype: str = "uint8"
    channels: int = 3
    files: tuple[str, ...] = ()
    shapes: tuple[tuple[int, int, int], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    windows: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> FeedSpec:
        data = json.loads(raw)
        for name in ("paths", "ops", "files"):
            data[name] = tuple(data[name])
        data["shapes"] = tuple(tuple(s) for s in data["shapes"])
        return cls(**data)

    def build_ops(self) -> list[Op]:
        from ...ops.config import from_config

        return from_config(list(self.ops))


class FeedReader:
    """Fills slots with batches of one store (one per worker process).

    Args:
        spec: what to read and how.
        store: an open store (default: opened from ``spec.paths``).
    """

    def __init__(self, spec: FeedSpec, store: Store | None = None) -> None:
        self.spec = spec
        if spec.files:
            from ...stores.files import FileReader

            self.store: Store = store if store is not None else FileReader(spec.files, spec.shapes)
            self.shapes = np.asarray(spec.shapes, np.int64).reshape(-1, 3)
        else:
            self.store = store if store is not None else open_store(list(spec.paths), **spec.options)
            self.shapes = record_shapes(self.store)
        ops = spec.build_ops()
        self.layout = ParamLayout(ops)
        self.dtype = np.dtype(spec.pixel_dtype)
        self.raw_as_is = spec.mode == "arrays" and stored_as_is(self.store, self.dtype, spec.channels)
        self.window_op = ops[0] if spec.windows else None

    def _array(self, index: int, window: tuple[int, int, int, int] | None, into: np.ndarray) -> np.ndarray:
        image = np.asarray(self.store.decode(index, window, into=into, verify=self.spec.verify))
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] == 1 and self.spec.channels > 1:
            image = np.repeat(image, self.spec.channels, axis=2)
        return to_pixel_dtype(image, self.dtype)

    def _write(self, index: int, out: np.ndarray, window: tuple[int, int, int, int] | None,
               span: np.ndarray) -> None:
        """Record ``index``'s payload (its ``window`` only, if given) into ``out``; its size in
        bytes and an array's height and width into ``span[1:]``."""
        if self.spec.mode == "encoded" or (self.raw_as_is and window is None):
            # records whose stored bytes are already the payload are read straight into the slot
            size = self.store.read_into(index, memoryview(out), self.spec.verify)
            span[1:] = size, *(self.shapes[index][:2] if self.raw_as_is else (0, 0))
            return
        array = self._array(index, window, out)
        if array.nbytes > out.size:
            raise self.store.too_large(index, array.nbytes, out.size)
        if array.ctypes.data != out.ctypes.data:  # not decoded in place (windows, codecs that cannot, conversions)
            np.copyto(out[: array.nbytes].view(array.dtype).reshape(array.shape), array)
        span[1:] = array.nbytes, *array.shape[:2]

    def fill(self, slot: memoryview, epoch: int, indices: np.ndarray) -> int:
        """Write the batch ``indices`` of ``epoch`` into ``slot``; return the bytes used."""
        count = len(indices)
        params_at, data_at = slot_layout(count, self.layout.size)
        spans = np.frombuffer(slot, np.int64, SPAN * count, 0).reshape(count, SPAN)
        params = np.frombuffer(slot, np.float32, count * self.layout.size, params_at).reshape(count, self.layout.size)
        params[:] = self.layout.draw_batch(self.spec.seed, epoch, indices, self.shapes[indices])
        data = np.frombuffer(slot, np.uint8, len(slot) - data_at, data_at)
        windows = self._windows(params)
        # arrays of one shape travel as one dense block (windows: each its own size)
        dense = windows is None and dense_batch(self.spec.mode, self.shapes[indices])
        position = 0
        for row, index in enumerate(indices):
            spans[row, 0] = position
            self._write(int(index), data[position:], None if windows is None else windows[row], spans[row])
            position += int(spans[row, 1]) if dense else align(int(spans[row, 1]))
        return data_at + position

    def _windows(self, params: np.ndarray) -> list[tuple[int, int, int, int]] | None:
        """The first op's window of each record (drawn in ``params``), where records are decoded
        as their windows."""
        op = self.window_op
        if op is None:
            return None
        return [op.window(op.decode(row[: op.param_count])) for row in params.tolist()]


def stored_as_is(store: Store, dtype: np.dtype, channels: int) -> bool:
    """Whether every record's stored bytes are the array the feed hands DALI (a raw store of
    ``dtype`` pixels and ``channels`` channels): they are read straight into the slot, whole."""
    shards = store.shards
    if not all(s.header.payload == "raw" for s in shards):
        return False
    return ({np.dtype(d) for s in shards for d in s.header.dtypes} == {np.dtype(dtype)}
            and bool((record_shapes(store)[:, 2] == channels).all()))


def feeds_windows(first: Op, *, host: bool, encoded: bool) -> bool:
    """Whether the feed lays out array records as ``first``'s window (``FeedSpec.windows``): for
    the host stage (which then takes windows, as from DALI's decoder), when ``first`` reads one."""
    return host and not encoded and reads_window(first)


def dense_batch(mode: str, shapes: np.ndarray) -> bool:
    """Arrays of one shape travel as one dense block (one contiguous batch for DALI)."""
    return mode == "arrays" and len(shapes) > 0 and bool((shapes == shapes[0]).all())


def record_shapes(store: Store) -> np.ndarray:
    """``(N, 3)`` int64 height, width, channels of every record (after the decode policy)."""
    return store.record_shapes()


def record_nbytes(store: Store) -> np.ndarray:
    """``(N,)`` int64 stored payload size of every record."""
    return store.record_nbytes()
