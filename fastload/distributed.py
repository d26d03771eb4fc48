"""Rank and world size discovery for sharding across ``torch.distributed`` processes."""

from __future__ import annotations

import os

__all__ = ["rank_and_world", "local_device_index"]


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """The (rank, world size) to shard by.

    Given values win; otherwise an initialized ``torch.distributed`` process group; otherwise
    the ``RANK``/``WORLD_SIZE`` variables torchrun sets; otherwise a single process (0, 1).
    """
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is not None and world_size is not None:
        found = (rank, world_size)
    else:
        found = _from_process_group() or _from_environment() or (0, 1)
    if found[1] < 1 or not 0 <= found[0] < found[1]:
        raise ValueError(f"rank {found[0]} is outside 0..{found[1] - 1}")
    return found


def _from_process_group() -> tuple[int, int] | None:
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _from_environment() -> tuple[int, int] | None:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def local_device_index() -> int:
    """The CUDA device of this process: ``LOCAL_RANK`` under torchrun, else the current one."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() else 0
