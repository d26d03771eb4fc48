"""The operator interface: one spec, a NumPy implementation and a DALI implementation.

An operator is a small frozen dataclass (picklable, comparable, serialisable to a config
dict). Random parameters are drawn apart from their application (``draw`` then ``apply``), so
a run replays exactly from its seed and determinism is testable. Both backends draw them the
same way, per sample, from ``[seed, epoch, record]``: the torch backend applies them with
NumPy, the DALI backend's feed encodes them (``encode``, ``param_count`` floats per op) into
a per-sample vector that the op's DALI lowering reads (``dali(images, params, ctx)``).

An op also declares what the DALI lowering may fuse (see ``fastload.backends.dali.lowering``):
``decoder_roi`` (a crop the decoder can do while decoding) and ``cmn_args`` (what
``crop_mirror_normalize`` can do at the end of the pipeline).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import FastloadError

__all__ = ["Op", "OpError", "REGISTRY", "describe_sample", "fixed_output_size", "guarded", "reads_window",
           "register", "sample_rng", "seed_entropy"]

REGISTRY: dict[str, type[Op]] = {}


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """One sample's random generator: the same (seed, epoch, record) always draws the same
    parameters, whatever the backend, worker count, batch size or resume point."""
    return np.random.default_rng([seed, epoch, index])


def describe_sample(entropy: Sequence[int] | None) -> str:
    """Name a sample from its generator's seed entropy ([seed, epoch, record, ...] in fastload)."""
    if entropy is None:
        return "a sample"
    values = [int(v) for v in np.ravel(entropy)]
    if len(values) >= 3:
        return f"record {values[2]} (epoch {values[1]}, seed {values[0]})"
    return f"the sample seeded {values}"


class OpError(FastloadError, RuntimeError):
    """An augmentation op failed on a sample (its draw or its application): names the op, the
    sample (its record, epoch and seed) and why."""

    def __init__(self, op: str, sample: str, reason: str) -> None:
        self.op = op
        self.sample = sample
        self.reason = reason
        super().__init__(f"{self.what()} failed on {sample}: {reason}")

    def what(self) -> str:
        return f"op {self.op}"


def seed_entropy(rng: np.random.Generator) -> list[int] | None:
    """The integers a generator was seeded with (None when it was not seeded by a SeedSequence)."""
    seed_seq = getattr(rng.bit_generator, "seed_seq", None)
    entropy = getattr(seed_seq, "entropy", None)
    return None if entropy is None else [int(v) for v in np.ravel(entropy)]


def guarded(op: Op, sample: np.random.Generator | Sequence[int] | None, exc: Exception) -> Exception:
    """``exc``, raised by ``op`` on a sample (its generator, or the generator's seed entropy), as
    the error to raise: an ``OpError`` naming both (fastload's own errors, which name their record
    already, as they are).

    Wrap per-sample work in ``try``/``except Exception as exc: raise guarded(...) from exc``:
    free where nothing fails (Python 3.11's exceptions cost only when raised)."""
    if isinstance(exc, FastloadError):
        return exc
    entropy = seed_entropy(sample) if isinstance(sample, np.random.Generator) else sample
    return OpError(repr(op), describe_sample(entropy), f"{type(exc).__name__}: {exc}")


def fixed_output_size(ops: Sequence[Op]) -> tuple[int, int] | None:
    """The one height and width ``ops`` make from any input size (what a batch of them needs),
    or None when it depends on the input or is not known ahead (a custom op)."""
    sizes: list[tuple[int, int] | None] = [(1, 1), (2, 3)]
    for op in ops:
        sizes = [op.output_size(*size) if size is not None else None for size in sizes]
    return sizes[0] if sizes[0] is not None and sizes[0] == sizes[1] else None


def reads_window(op: Op) -> bool:
    """Whether ``op`` reads a drawn window of its image (``Op.window``): its input may then be
    decoded as that window alone."""
    return type(op).window is not Op.window


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
    #: Floats this op's drawn parameters take in the DALI feed's per-sample parameter vector.
    param_count: ClassVar[int] = 0
    #: True when ``draw`` depends on the image size (the feed then tracks sizes through ops).
    draw_needs_size: ClassVar[bool] = False

    def draw(self, rng: np.random.Generator, height: int, width: int) -> Any:
        """Draw this op's random parameters for an image of the given size (None if none)."""
        return None

    def apply(self, image: np.ndarray, params: Any) -> np.ndarray:
        raise NotImplementedError

    def numpy(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Run on one HWC NumPy image: draw the parameters, then apply them (as the DALI feed
        carries them: ``as_fed``)."""
        return self.apply(image, self.as_fed(self.draw(rng, image.shape[0], image.shape[1])))

    def as_fed(self, params: Any) -> Any:
        """``draw``'s ``params`` as the DALI feed carries them: ``encode``d into its float32 vector,
        then ``decode``d. Every backend applies these, so the same draw gives the same pixels on
        each: a float64 angle or factor and its float32 rounding rotate or scale a float image
        differently in the last bits (1 ulp in 8% of a rotated image's pixels, 22% after a
        ColorJitter), and now and then move an 8-bit pixel by one grey level. Ops without a
        decode are never fed that way (DALI runs them from the vector): kept as drawn."""
        if not self.param_count or type(self).decode is Op.decode:
            return params
        return self.decode(np.asarray(self.encode(params), np.float32).tolist())

    def output_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The image size this op produces from ``height x width`` (None: not known ahead)."""
        return height, width

    def encode(self, params: Any) -> tuple[float, ...]:
        """``draw``'s result as ``param_count`` floats, for the DALI feed."""
        return ()

    def decode(self, values: Any) -> Any:
        """``apply``'s parameters from ``encode``'s floats (the feed's vector, as a list of
        Python floats): what the CPU's host stage needs to run this op on DALI's output with the
        torch backend's code. Ops that draw nothing have nothing to decode."""
        if self.param_count:
            raise NotImplementedError(f"{type(self).__name__} cannot decode its feed parameters")
        return None

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        """Map onto DALI operators inside a pipeline definition.

        ``images`` is a DataNode; ``params`` a CPU DataNode of this op's ``param_count``
        float32 parameters per sample (None when it has none).
        """
        raise NotImplementedError(f"{type(self).__name__} has no DALI implementation yet")

    def window(self, params: Any) -> tuple[int, int, int, int] | None:
        """The part of the image ``apply`` reads, from its drawn ``params``: ``(top, left, height,
        width)``, or None when it reads the whole image. Ops that declare one let the image be
        decoded as that window alone (``RecordSource.decode(window=)``), then ``after_window``."""
        return None

    def after_window(self, image: np.ndarray, params: Any) -> np.ndarray:
        """What remains of ``apply`` once the image is cut to ``window(params)``."""
        raise NotImplementedError(f"{type(self).__name__} declares no window")

    def decoder_roi(self, params: Any) -> tuple[Any, Any] | None:
        """``(anchor, shape)`` int32 HW DataNodes of a crop the decoder can do while decoding
        (only the window is decoded), or None when this op is no such crop."""
        return None

    def after_roi(self, images: Any, params: Any, ctx: Any) -> Any:
        """What remains of this op once the decoder has cut ``decoder_roi`` (``params`` as for ``dali``)."""
        return images

    def cmn_role(self) -> str | None:
        """Which part of the final ``fn.crop_mirror_normalize`` this op can be: "crop",
        "mirror" or "normalize" (applied in that order), or None."""
        return None

    def cmn_args(self, params: Any, ctx: Any) -> dict[str, Any]:
        """The ``fn.crop_mirror_normalize`` keyword arguments that do this op (see cmn_role)."""
        return {}

    def to_config(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable description: ``{"op": name, **fields}``."""
        fields = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {"op": type(self).__name__, **fields}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
