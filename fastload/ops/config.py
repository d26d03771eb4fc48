"""Op lists to and from JSON/YAML, so an experiment's augmentation is saved beside its checkpoints.

A config is a list of entries, one per op, in order (or ``{"augment": [...]}``)::

    - {op: RandomResizedCrop, size: 224}
    - {op: Flip, horizontal: true, vertical: true}
    - {op: GaussianNoise, sigma: 0.02}                   # a shipped custom op, by name
    - {op: custom, function: "mylab.aug:add_noise", args: {sigma: 0.02}}
    - {op: batch_custom, function: "mylab.aug:mixup", args: {alpha: 0.2}}

Built-in ops take their dataclass fields as keys. ``custom`` entries import the module they
name, so a config is trusted like code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from ..config_files import load_config_file, save_config_file
from .base import REGISTRY, Op
from .custom import BatchOp, CustomOp
from .library import LIBRARY, LIBRARY_NAMES

__all__ = ["from_config", "to_config", "save_config", "load_config_file"]


def _tuples(value: Any) -> Any:
    """JSON and YAML have lists only; op fields are tuples (hashable, frozen)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _entry_to_op(entry: Any, position: int) -> Op:
    if isinstance(entry, Op):
        return entry
    if not isinstance(entry, dict) or "op" not in entry:
        raise ValueError(f"augment entry {position} must be a mapping with an 'op' key, got {entry!r}")
    fields = {k: _tuples(v) for k, v in entry.items() if k != "op"}
    name = entry["op"]
    try:
        if name in ("custom", "batch_custom"):
            return _custom_op(name, fields)
        if name in REGISTRY:
            return REGISTRY[name](**fields)
        if name in LIBRARY:
            return LIBRARY[name](**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"augment entry {position} ({name}): {exc}") from exc
    known = sorted({*REGISTRY, *LIBRARY, "custom", "batch_custom"})
    raise ValueError(f"augment entry {position}: unknown op {name!r}; known ops: {', '.join(known)}")


def _custom_op(kind: str, fields: dict[str, Any]) -> CustomOp:
    unknown = set(fields) - {"function", "args", "vectorized"}
    if "function" not in fields or unknown:
        raise TypeError(f"a {kind} entry takes 'function' ('module:qualname'), optional 'args' and "
                        "'vectorized'" + (f", not {sorted(unknown)}" if unknown else ""))
    cls = BatchOp if kind == "batch_custom" else CustomOp
    spec = cls(function=fields["function"], vectorized=bool(fields.get("vectorized", False)))
    spec._function()  # import now: a config that names a missing function fails when loaded
    args = fields.get("args") or {}
    return spec.with_args(**args) if args else spec


def from_config(config: Sequence[dict[str, Any]] | dict[str, Any] | str | os.PathLike[str]) -> list[Op]:
    """Build an op list from a list of entries, ``{"augment": [...]}``, or a JSON/YAML file.

    Example:
        >>> from fastload.ops import from_config
        >>> from_config([{"op": "Flip", "horizontal": True}, {"op": "Normalize"}])
        [Flip(horizontal=True, vertical=False, p=0.5), Normalize(mean=None, std=None)]
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config_file(config)
    if isinstance(config, dict):
        if "augment" not in config:
            raise ValueError("an augment config mapping needs an 'augment' key holding the op list")
        config = config["augment"]
    if not isinstance(config, (list, tuple)):
        raise ValueError(f"an augment config is a list of ops, got {type(config).__name__}")
    return [_entry_to_op(entry, i) for i, entry in enumerate(config)]


def to_config(ops: Sequence[Op]) -> list[dict[str, Any]]:
    """The JSON/YAML-serialisable description of an op list (``from_config`` inverts it)."""
    out = []
    for spec in ops:
        if not isinstance(spec, Op) or not dataclasses.is_dataclass(spec):
            raise TypeError(f"not a fastload op: {spec!r}")
        out.append(_entry(spec))
    return out


def _entry(spec: Op) -> dict[str, Any]:
    """A shipped custom op is saved by its library name, as it is written in a config."""
    entry = spec.to_config()
    if isinstance(spec, CustomOp) and spec.function in LIBRARY_NAMES:
        return {"op": LIBRARY_NAMES[spec.function], **entry["args"]}
    return entry


def save_config(ops: Sequence[Op], path: str | os.PathLike[str]) -> None:
    """Write an op list to ``path`` (.json, or .yaml/.yml)."""
    save_config_file(to_config(ops), path)
