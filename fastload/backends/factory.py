"""Which backend and device a Loader runs on, and the backend object that does the work.

``backend="auto"`` takes DALI when it imports, else the PyTorch backend; ``device="auto"`` takes
CUDA when torch sees a device. The backends' modules are imported only when one is made: the
DALI one pulls in DALI (an optional extra), which a torch-backend Loader must not need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._optional import available, require
from ..ops import Op
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


def resolve_backend(backend: str) -> str:
    """"dali" or "torch" for the Loader's ``backend=`` argument."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "dali" if dali_available() else "torch"
    if backend == "dali":
        require("nvidia.dali", "cuda13", "backend='dali'", package="nvidia-dali")
    return backend


def make_backend(name: str, store: Any, ops: Sequence[Op], config: BackendConfig, *,
                 feed_workers: int | None, pin_memory: bool) -> Backend:
    """The backend ``name`` ("dali" or "torch") over ``store``, running ``ops``."""
    if name == "dali":
        from .dali.backend import DaliBackend  # imports DALI: only when a DALI backend is made

        return DaliBackend(store, ops, config, feed_workers=feed_workers)
    from .torch.backend import TorchBackend

    return TorchBackend(store, ops, config, pin_memory=pin_memory)
