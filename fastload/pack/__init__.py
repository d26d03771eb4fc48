"""Parallel packing: list a source, validate every input, write a store, rename it into place.

A pack never leaves a partial store at its target: it writes ``.NAME.partial-PID`` beside the
target, fsyncs it, and renames it over the target only when complete.

One job a module: ``options`` (PackOptions), ``worker`` (one input -> its records, in the worker
processes), ``payload`` (resize and re-encode), ``stats`` (dataset statistics), ``recorder``
(the record table), ``writer`` (the atomic shard write and disk errors), ``run`` (the run, its
reports and summary).
"""

from .options import PackOptions
from .run import PackSummary, default_output, pack, pack_source, shard_paths

__all__ = ["PackOptions", "PackSummary", "pack", "pack_source", "default_output", "shard_paths"]
