"""Which backend and device a Loader runs on, and the backend object that does the work.

``backend="auto"`` takes DALI when it imports and has work of its own (see ``resolve_backend``),
else the PyTorch backend; ``device="auto"`` takes CUDA when torch sees a device. The backends'
modules are imported only when one is made (and the DALI one's store check where ``auto`` decides
on the CPU with DALI installed): the DALI backend pulls in DALI (an optional extra), which a
torch-backend Loader must not need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._optional import available, require
from ..ops import BatchOp, Op
from .base import Backend, BackendConfig

__all__ = ["BACKENDS", "dali_available", "make_backend", "resolve_backend", "resolve_device"]

BACKENDS = ("auto", "dali", "torch")


def dali_available() -> bool:
    """True when NVIDIA DALI imports (the ``cuda13``/``cuda12`` extras)."""
    return available("nvidia.dali")


def resolve_device(device: str) -> str:
    """"cpu" or "cuda" for the Loader's ``device=`` argument."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def resolve_backend(backend: str, *, device: str | None = None, store: Any = None, ops: Sequence[Op] = ()) -> str:
    """"dali" or "torch" for the Loader's ``backend=`` argument (``device`` resolved, ``store``
    opened, ``ops`` resolved).

    ``"auto"`` takes DALI when it imports and has work of its own: any work on the GPU, decoding
    the records on the CPU (its decoders read the store: ``dali_decodes``), or a ``@batch_op``
    (which the DALI backend hands whole batches; the torch backend, batches of one). Otherwise the
    torch backend. Why: on the CPU, a store DALI decodes nothing of (raw arrays, ``.npy``, TIFF)
    leaves the DALI backend only the ops, which it runs on threads of the Loader's process, where
    the torch backend runs the same ops in worker processes. 2 cores, 6-channel 512 px samples (700
    of them), the op lists' ch6 list: 690-697 against 643-652 img/s from ``.npy``, 776-780 against
    677-681 from a raw store; raw 3-channel within 5%; the GIL per image 5-30x lower (4-16 against
    41-189 us), which is what decides how far it scales (benchmarks/RESULTS.md section 25).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if not dali_available():
            return "torch"
        if device == "cpu" and store is not None and not any(isinstance(op, BatchOp) for op in ops):
            from .dali.backend import dali_decodes  # DALI itself is not imported by this

            return "dali" if dali_decodes(store) else "torch"
        return "dali"
    if backend == "dali":
        require("nvidia.dali", "cuda13", "backend='dali'", package="nvidia-dali")
    return backend


def make_backend(name: str, store: Any, ops: Sequence[Op], config: BackendConfig, *,
                 feed_workers: int | None, pin_memory: bool, host_workers: int = 0) -> Backend:
    """The backend ``name`` ("dali" or "torch") over ``store``, running ``ops``."""
    if name == "dali":
        from .dali.backend import DaliBackend  # imports DALI: only when a DALI backend is made

        return DaliBackend(store, ops, config, feed_workers=feed_workers, host_workers=host_workers)
    from .torch.backend import TorchBackend

    return TorchBackend(store, ops, config, pin_memory=pin_memory)
