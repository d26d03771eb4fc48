"""A Lightning callback that shows the stall meter (fastload.stats) every training epoch.

    import lightning
    from fastload.integrations.lightning import StallMeterCallback

    trainer = lightning.Trainer(callbacks=[StallMeterCallback()])
    trainer.fit(model, fastload.Loader("train.lmdb", batch_size=256, shuffle=True))

At each training epoch's end it gathers every rank's figures for that epoch (a collective under
DDP, which every rank reaches there), prints them on rank 0 with the slowest rank named, and
logs ``loader/stall_fraction``, ``loader/wait_s`` and ``loader/slowest_rank`` (the slowest
rank's, the same on every rank) to the Trainer's logger.

Works with ``lightning`` or ``pytorch_lightning`` installed (``pip install lightning``).
"""

from __future__ import annotations

from typing import Any

from ..errors import MissingExtraError
from ..stats import RankReport, gather

__all__ = ["StallMeterCallback"]


def _callback_base() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise MissingExtraError("lightning", "dev", "fastload.integrations.lightning") from None
    return Callback


def _fastload_loader(loaders: Any) -> Any:
    """The first fastload Loader among what Lightning holds (one loader, a list, a dict, ...)."""
    if hasattr(loaders, "stats") and hasattr(loaders, "sampler"):
        return loaders
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        for item in loaders:
            found = _fastload_loader(item)
            if found is not None:
                return found
    inner = getattr(loaders, "iterables", None)  # Lightning's CombinedLoader
    return _fastload_loader(inner) if inner is not None and inner is not loaders else None


class StallMeterCallback(_callback_base()):  # type: ignore[misc]
    """Print and log the training loader's stall meter at every training epoch's end.

    Args:
        loader: the fastload Loader to watch (default: the Trainer's training loader).
        every: epochs between reports.
        prefix: prefix of the logged metric names.
        print_report: print every rank's line on rank 0.
    """

    def __init__(self, loader: Any = None, every: int = 1, prefix: str = "loader/", print_report: bool = True) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1 epoch, got {every}")
        self.loader, self.every, self.prefix, self.print_report = loader, every, prefix, print_report
        self.reports: list[RankReport] = []  # one per report made, oldest first

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if (trainer.current_epoch + 1) % self.every:
            return
        loader = self.loader if self.loader is not None else _fastload_loader(trainer.train_dataloader)
        if loader is None:
            return
        report = gather(loader.stats())
        self.reports.append(report)
        worst = max(report.ranks, key=lambda s: s.wait_s)
        pl_module.log_dict({f"{self.prefix}stall_fraction": worst.stall_fraction, f"{self.prefix}wait_s": worst.wait_s,
                            f"{self.prefix}slowest_rank": float(worst.rank)}, on_epoch=True)
        if self.print_report and trainer.is_global_zero:
            trainer.print(str(report))
