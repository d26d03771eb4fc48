"""A host worker process: ``python -m fastload.backends.dali.host_worker --slots FD,FD,...``.

Started by ``HostPool`` through ``fastload.workers`` (a fresh interpreter). It builds the host
stage from the spec it reads first (``HostSpec``: the op list's config, the output), then for each
request runs the ops of a chunk of the batch in the input slot and writes the finished samples
into the output slot (both memfds inherited from the parent), and answers. One thread: the
processes are the parallelism (OpenCV and torch at one thread each). It exits when its stdin
closes.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np
import torch

from ...output import BatchWriter
from ...workers.channel import read_exact, send_message, write_all
from ...workers.failures import error_report
from ...workers.memory import retain_freed_memory
from ...workers.slots import SlotMaps, start_slot_worker
from .host import HostBatch, HostFinish
from .host_pool import FAILED, OK, READY, REQUEST, RESPONSE, SPAN, HostSpec, input_layout

__all__ = ["main"]


class _Server:
    """Runs the chunks of the batches in the input slot into the output slots."""

    def __init__(self, finish: HostFinish, fds: list[int]) -> None:
        self.finish, self.maps = finish, SlotMaps(fds)
        self._cpu = torch.device("cpu")
        self._seq: int | None = None
        self._batch: Any = None
        self._lock = threading.Lock()

    def _load(self, seq: int, slot: int, capacity: int, count: int, epoch: int) -> Any:
        """The batch ``seq`` in the input slot (read once for all its chunks)."""
        if seq == self._seq:
            return self._batch
        buf = self.maps.get(slot, capacity)
        k = self.finish.param_size
        params_at, records_at, data_at = input_layout(count, k)
        spans = np.frombuffer(buf, np.int64, SPAN * count, 0).reshape(count, SPAN)
        params = np.frombuffer(buf, np.float32, count * k, params_at).reshape(count, k)
        records = np.frombuffer(buf, np.int64, count, records_at).tolist()
        data = np.frombuffer(buf, np.uint8, capacity - data_at, data_at)
        dtype = np.dtype(self.finish.output.pixel_dtype)
        images = []
        for start, h, w, c in spans.tolist():
            images.append(data[start : start + h * w * c * dtype.itemsize].view(dtype).reshape(h, w, c))
        self._seq, self._batch = seq, HostBatch(images, self.finish.decode_params(params), epoch, records)
        return self._batch

    def run(self, head: bytes) -> tuple[int, int]:
        in_slot, out_slot, in_cap, out_cap, count, start, stop, epoch, seq, height, width, channels, kind = \
            REQUEST.unpack(head)
        batch = self._load(seq, in_slot, in_cap, count, epoch)
        finish = self.finish
        out = BatchWriter(np, self._cpu, count, finish.output)
        shape = out.shape(height, width, channels)
        array = np.frombuffer(self.maps.get(out_slot, out_cap), out.dtype, int(np.prod(shape))).reshape(shape)
        out.reserve(height, width, channels, np.dtype(kind.rstrip(b"\0").decode()), into=array)
        finish.run_chunk(range(start, stop), batch, out, self._lock)
        return start, seq


def _serve(server: _Server, inp: int, out: int) -> None:
    while True:
        head = read_exact(inp, REQUEST.size)
        if head is None:
            return
        try:
            start, seq = server.run(head)
        except Exception as exc:
            fields = REQUEST.unpack(head)
            write_all(out, RESPONSE.pack(FAILED, fields[5], fields[8]))
            send_message(out, error_report(exc))
        else:
            write_all(out, RESPONSE.pack(OK, start, seq))


def main(argv: list[str] | None = None) -> int:
    started = start_slot_worker(argv, "fastload host worker (started by fastload.Loader)")
    if started is None:
        return 0
    inp, out, fds, raw = started
    try:
        import cv2

        cv2.setNumThreads(1)  # one thread a process: the processes are the parallelism
        torch.set_num_threads(1)
        retain_freed_memory()  # the same few arrays every sample: no page faults for them (workers.memory)
        server = _Server(HostSpec.from_json(raw).build(), fds)
    except Exception as exc:
        write_all(out, RESPONSE.pack(FAILED, 0, -1))
        send_message(out, error_report(exc))
        return 1
    try:
        write_all(out, RESPONSE.pack(READY, 0, -1))
        _serve(server, inp, out)
    except BrokenPipeError:  # the loader closed while this worker answered: nobody to tell
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
