"""Batch transforms: functions of whole batches on the loader's device, after the pipeline.

A batch transform is any callable ``f(images, labels, rng) -> (images, labels)``: ``images`` the
batch as the Loader yields it (a float or uint8 tensor in the loader's layout, on its device),
``labels`` int64 class indices or, once a transform mixed them, float ``(B, num_classes)`` soft
labels; ``rng`` a ``torch.Generator`` on the same device, seeded from ``(seed, epoch, batch)``, so
a run (and a resumed run) replays exactly. They run on the current CUDA stream, asynchronously,
as timm's ``PrefetchLoader``, FFCV's ``ToDevice`` ops and Composer's device transforms do.

Built-in transforms are small frozen dataclasses (saved to and loaded from JSON/YAML); a plain
function is referenced by ``"module:qualname"`` in configs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..config_files import load_config_file, save_config_file
from ..workers.names import resolve

__all__ = ["BatchTransform", "TRANSFORMS", "register_transform", "batch_generator", "one_hot",
           "transforms_from_config", "transforms_to_config", "bind_transforms", "save_transforms"]

TRANSFORMS: dict[str, type] = {}


def register_transform(cls: type) -> type:
    """Make a batch transform class constructible by name from a config."""
    TRANSFORMS[cls.__name__] = cls
    return cls


class BatchTransform:
    """Base of built-in batch transforms (frozen dataclasses with a ``__call__``).

    ``num_classes`` (when a transform has that field and it is None) is filled in by the Loader
    from the store's classes.
    """

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"transform": type(self).__name__,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


def batch_generator(seed: int, epoch: int, batch: int, salt: int, device: torch.device) -> torch.Generator:
    """The generator of one transform (``salt``: its position) for batch ``batch`` of ``epoch``."""
    state = np.random.SeedSequence([seed, epoch, batch, salt, 0x6261]).generate_state(1, np.uint64)[0]
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state) & ((1 << 63) - 1))
    return generator


def one_hot(labels: torch.Tensor, num_classes: int | None, name: str) -> torch.Tensor:
    """Labels as float ``(B, num_classes)`` soft labels (kept as they are when already soft)."""
    if labels.dtype.is_floating_point and labels.ndim == 2:
        return labels
    if num_classes is None:
        raise ValueError(f"{name} needs num_classes (the Loader fills it from the store's classes; "
                         "give it when the store has none)")
    # On the GPU this check would wait for the stream; one_hot's own device assert catches it there.
    if not labels.is_cuda and (labels < 0).any():
        raise ValueError(f"{name}: unlabelled samples (label -1) cannot be mixed")
    return torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)


def bind_transforms(transforms: Sequence[Callable[..., Any]], num_classes: int | None) -> list[Callable[..., Any]]:
    """Fill ``num_classes`` into the transforms that want it and did not get it."""
    bound = []
    for t in transforms:
        if dataclasses.is_dataclass(t) and hasattr(t, "num_classes") and t.num_classes is None:
            if not num_classes:  # say so now, not at the first batch
                raise ValueError(f"{type(t).__name__} makes soft labels of num_classes classes, and the "
                                 f"store names no classes: give {type(t).__name__}(num_classes=...)")
            t = dataclasses.replace(t, num_classes=num_classes)  # type: ignore[type-var]
        bound.append(t)
    return bound


def _function_ref(function: Callable[..., Any]) -> str:
    ref = f"{getattr(function, '__module__', '')}:{getattr(function, '__qualname__', '')}"
    if "<locals>" in ref or "<lambda>" in ref or ref.startswith(":"):
        raise ValueError(f"batch transform {function!r} is defined inside a function; define it at "
                         "module level to save it in a config")
    return ref


def _import(ref: str) -> Callable[..., Any]:
    target: Any = resolve(ref)
    if not callable(target):
        raise ValueError(f"batch transform {ref!r} is not callable")
    return target


def transforms_to_config(transforms: Sequence[Callable[..., Any]]) -> list[dict[str, Any]]:
    """The JSON/YAML-serialisable description of a transform list."""
    return [t.to_config() if isinstance(t, BatchTransform) else {"transform": "function",
                                                                  "function": _function_ref(t)}
            for t in transforms]


def transforms_from_config(config: Sequence[dict[str, Any]] | str | os.PathLike[str]) -> list[Callable[..., Any]]:
    """Build a transform list from entries or a ``.json``/``.yaml`` file (functions are imported:
    trust a config like code)."""
    if isinstance(config, (str, os.PathLike)):
        config = load_config_file(config)
        if isinstance(config, dict):
            config = config.get("batch_transforms", [])
    out: list[Callable[..., Any]] = []
    for i, entry in enumerate(config):
        if not isinstance(entry, dict) or "transform" not in entry:
            raise ValueError(f"batch transform entry {i} must be a mapping with a 'transform' key, got {entry!r}")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k != "transform"}
        name = entry["transform"]
        if name == "function":
            out.append(_import(str(fields["function"])))
        elif name in TRANSFORMS:
            out.append(TRANSFORMS[name](**fields))
        else:
            raise ValueError(f"batch transform entry {i}: unknown transform {name!r}; known: "
                             f"{', '.join(sorted(TRANSFORMS))}, function")
    return out


def save_transforms(transforms: Sequence[Callable[..., Any]], path: str | os.PathLike[str]) -> None:
    """Write a transform list to ``path`` (.json, or .yaml/.yml)."""
    save_config_file(transforms_to_config(transforms), path)
