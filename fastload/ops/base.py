"""The operator interface: one spec, a NumPy implementation and a DALI implementation.

An operator is a small frozen dataclass (picklable, comparable, serialisable to a config
dict). Random parameters are drawn apart from their application (``draw`` then ``apply``), so
a run replays exactly from its seed and determinism is testable.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

__all__ = ["Op", "REGISTRY", "register"]

REGISTRY: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    """Make an operator constructible by name from a config file."""
    REGISTRY[cls.__name__] = cls
    return cls


class Op:
    """Base of built-in operators. Subclasses are frozen dataclasses.

    ``numpy`` works on one ``HxWxC`` image (any channel count, uint8/uint16/float32) and returns
    ``HxWxC``; ``dali`` maps the operator onto DALI operators inside a pipeline definition.
    """

    #: True when the op must see the decoded image at full size (not fusable into the decoder).
    random: ClassVar[bool] = False

    def draw(self, rng: np.random.Generator, height: int, width: int) -> Any:
        """Draw this op's random parameters for an image of the given size (None if none)."""
        return None

    def apply(self, image: np.ndarray, params: Any) -> np.ndarray:
        raise NotImplementedError

    def numpy(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Run on one HWC NumPy image: draw the parameters, then apply them."""
        return self.apply(image, self.draw(rng, image.shape[0], image.shape[1]))

    def dali(self, images: Any, ctx: Any) -> Any:
        """Map onto DALI operators (``images`` is a DataNode inside a pipeline definition)."""
        raise NotImplementedError(f"{type(self).__name__} has no DALI implementation yet")

    def to_config(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable description: ``{"op": name, **fields}``."""
        fields = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"op": type(self).__name__, **fields}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
