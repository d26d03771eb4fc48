"""Custom operators: a user function written once against the array API, run anywhere.

    import fastload

    @fastload.op
    def add_noise(x, rng, sigma=0.05):
        xp = fastload.array_namespace(x)          # numpy on CPU pipelines, cupy on GPU ones
        return x + sigma * xp.asarray(rng.standard_normal(x.shape, dtype="float32"), dtype=x.dtype)

    augment = [..., add_noise.with_args(sigma=0.02)]

``@op`` wraps a per-sample function ``f(x, rng, **args)`` (``x`` one HxWxC image); ``@batch_op``
a per-batch one ``f(images, rng, **args)`` (``images`` a list of HxWxC images, returns a list).
A function that names an ``rng`` parameter gets a NumPy Generator seeded per sample (per batch
for batch ops), so its randomness replays from the loader's seed. The torch backend runs the
function with NumPy arrays; DALI pipelines run it through ``fn.python_function``: NumPy arrays on
CPU, CuPy arrays on the GPU (DALI hands them over by DLPack, without host copies).

The spec holds the function by reference (``"module:qualname"``), so it pickles into worker
processes (fork or spawn: the module is imported there, ``__main__`` included when it is a
script) and serialises to a JSON/YAML config. Loading a config imports the modules it names:
treat configs like code.
"""

from __future__ import annotations

import dataclasses
import inspect
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..workers.names import resolve
from ._dali_custom import python_function
from .base import Op, OpError, describe_sample, guarded, seed_entropy

__all__ = [
    "BatchOp",
    "CustomOp",
    "CustomOpError",
    "array_namespace",
    "batch_op",
    "op",
    "resolve_function",
    "run_numpy",
]


class CustomOpError(OpError):
    """A custom operator's function raised, or returned something that is not an image."""

    def what(self) -> str:
        return f"custom op {self.op!r}"


def array_namespace(x: Any) -> Any:
    """The array module of ``x``: ``numpy`` for NumPy arrays, ``cupy`` for CuPy arrays.

    Other array-API arrays answer with their own ``__array_namespace__()``.
    """
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    if type(x).__module__.partition(".")[0] == "cupy":
        import cupy

        return cupy
    if hasattr(x, "__array_namespace__"):
        return x.__array_namespace__()
    raise TypeError(f"array_namespace: expected a NumPy or CuPy array, got {type(x).__name__}")


def function_ref(function: Callable[..., Any]) -> str:
    """``"module:qualname"`` of a function (how a custom op is stored and serialised)."""
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", None)
    if not module or not qualname:
        raise TypeError(f"custom ops need a named function, got {function!r}")
    return f"{module}:{qualname}"


def _importable(ref: str) -> bool:
    return "<locals>" not in ref and "<lambda>" not in ref


def resolve_function(ref: str) -> Callable[..., Any]:
    """Import ``"module:qualname"`` and return the function (unwrapping a decorated op)."""
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"a custom op function is named 'module:qualname', got {ref!r}")
    if not _importable(ref):
        raise CustomOpError(ref, "load", "functions defined inside other functions or lambdas cannot be "
                            "imported in worker processes or from a config; define it at module level")
    try:
        target: Any = resolve(ref)
    except (ImportError, AttributeError) as exc:
        raise CustomOpError(ref, "load", f"cannot import it ({exc}); the module must be importable "
                            "in every process that runs the loader") from exc
    if isinstance(target, CustomOp):
        target = target._function()
    if not callable(target):
        raise CustomOpError(ref, "load", f"{type(target).__name__} is not callable")
    return target


def _plain_args(args: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Keyword arguments as a sorted, hashable tuple (lists become tuples)."""

    def freeze(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(freeze(v) for v in value)
        if isinstance(value, dict):
            raise TypeError("custom op arguments must be numbers, strings, booleans or lists of them")
        return value

    return tuple(sorted((str(k), freeze(v)) for k, v in args.items()))


@dataclass(frozen=True)
class CustomOp(Op):
    """A per-sample user function as an operator spec (made by ``@fastload.op``).

    Attributes:
        function: ``"module:qualname"`` of the function.
        args: keyword arguments, as sorted ``(name, value)`` pairs (see ``with_args``).
        vectorized: the function treats a stacked batch ``NxHxWxC`` as it treats each image
            (elementwise, or reducing only over axes it names): the DALI backend then calls it
            once per batch, on the device, instead of once per sample.
    """

    function: str
    args: tuple[tuple[str, Any], ...] = ()
    vectorized: bool = False

    batch: ClassVar[bool] = False
    random: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.function, str) or ":" not in self.function:
            raise ValueError(f"function must be 'module:qualname', got {self.function!r}")
        object.__setattr__(self, "args", _plain_args(dict(self.args)))

    @classmethod
    def wrap(cls, function: Callable[..., Any], vectorized: bool = False) -> CustomOp:
        """The op of ``function`` (usable in this process even when it is not importable)."""
        spec = cls(function=function_ref(function), vectorized=vectorized)
        object.__setattr__(spec, "_fn", function)
        return spec

    @property
    def name(self) -> str:
        return self.function.rpartition(":")[2]

    @property
    def salt(self) -> int:
        """A stable number of this op (function and arguments) mixed into its generator's seed,
        so two different custom ops of one pipeline draw different streams."""
        salt = self.__dict__.get("_salt")
        if salt is None:  # cached: the batch stage asks once per sample
            salt = zlib.crc32(repr((self.function, self.args)).encode())
            object.__setattr__(self, "_salt", salt)
        return salt

    def sample_rng(self, entropy: Sequence[int]) -> np.random.Generator:
        """The generator this op uses for the sample seeded ``entropy`` ([seed, epoch, record]
        in both backends), so the torch and DALI backends hand it the same numbers."""
        return np.random.default_rng([*(int(v) for v in entropy), self.salt])

    def with_args(self, **kwargs: Any) -> CustomOp:
        """The same op with keyword arguments bound (merged over those already bound)."""
        merged = {**dict(self.args), **kwargs}
        self._check_args(merged)
        spec = dataclasses.replace(self, args=_plain_args(merged))
        if "_fn" in self.__dict__:
            object.__setattr__(spec, "_fn", self.__dict__["_fn"])
        return spec

    def __call__(self, x: Any, rng: np.random.Generator | None = None, **kwargs: Any) -> Any:
        """Call the wrapped function directly (handy in notebooks and tests)."""
        rng = rng if rng is not None else np.random.default_rng()
        return self._invoke(x, rng, {**dict(self.args), **kwargs})

    # --- the function ------------------------------------------------------------------------
    def _function(self) -> Callable[..., Any]:
        function = self.__dict__.get("_fn")
        if function is None:
            function = resolve_function(self.function)
            object.__setattr__(self, "_fn", function)
        return function

    def _takes_rng(self) -> bool:
        takes = self.__dict__.get("_takes_rng_cached")
        if takes is None:
            try:
                takes = "rng" in inspect.signature(self._function()).parameters
            except (TypeError, ValueError):  # builtins without a signature
                takes = False
            object.__setattr__(self, "_takes_rng_cached", takes)
        return takes

    def _check_args(self, args: dict[str, Any]) -> None:
        try:
            params = inspect.signature(self._function()).parameters
        except (TypeError, ValueError):
            return
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        unknown = sorted(set(args) - set(params))
        if unknown:
            raise TypeError(f"custom op {self.name!r} has no parameter(s) {unknown}; "
                            f"it takes {list(params)}")

    def _invoke(self, x: Any, rng: np.random.Generator, args: dict[str, Any]) -> Any:
        function = self._function()
        return function(x, rng, **args) if self._takes_rng() else function(x, **args)

    def _guarded(self, x: Any, rng: np.random.Generator, where: str | Sequence[int] | None) -> Any:
        """Call the function; any error it raises becomes a CustomOpError naming op and ``where``."""
        try:
            return self._invoke(x, rng, dict(self.args))
        except CustomOpError:
            raise
        except Exception as exc:
            raise CustomOpError(self.name, _where(where), f"{type(exc).__name__}: {exc}") from exc

    def run(self, x: Any, rng: np.random.Generator, sample: str | Sequence[int] | None) -> Any:
        """Run on one image (NumPy or CuPy); errors name the op and ``sample`` (its description, or
        its ``[seed, epoch, record]``, described only when it fails: ~4 us a sample otherwise)."""
        return _check_image(self.name, sample, x, self._guarded(x, rng, sample))

    # --- the Op interface ----------------------------------------------------------------------
    def output_size(self, height: int, width: int) -> tuple[int, int] | None:
        return None  # a user function may return any size

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.random.Generator:
        """A custom function draws its own parameters: its 'parameters' are its generator,
        derived from the sample's seed when the sample's generator has one."""
        entropy = seed_entropy(rng)
        return rng if entropy is None else self.sample_rng(entropy)

    def apply(self, image: np.ndarray, params: np.random.Generator) -> np.ndarray:
        entropy = seed_entropy(params)
        return self.run(image, params, None if entropy is None else entropy[:-1])

    def numpy(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.run(image, self.draw(rng, *image.shape[:2]), seed_entropy(rng))

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        return python_function(self, images, ctx)

    def to_config(self) -> dict[str, Any]:
        if not _importable(self.function):
            raise ValueError(f"custom op {self.function!r} is defined inside a function; "
                             "define it at module level to save it in a config")
        args = {k: _listify(v) for k, v in self.args}
        entry = {"op": "batch_custom" if self.batch else "custom", "function": self.function, "args": args}
        return {**entry, "vectorized": True} if self.vectorized else entry

    # --- pickling: by reference, never the function object ----------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        if not _importable(self.function):
            raise CustomOpError(self.name, "pickling", "a function defined inside another function "
                                "cannot cross to worker processes; define it at module level")
        return {"function": self.function, "args": self.args, "vectorized": self.vectorized}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "function", state["function"])
        object.__setattr__(self, "args", state["args"])
        object.__setattr__(self, "vectorized", state.get("vectorized", False))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args)
        return f"{type(self).__name__}({self.function}{', ' if args else ''}{args})"


@dataclass(frozen=True, repr=False)
class BatchOp(CustomOp):
    """A per-batch user function ``f(images, rng, **args) -> images`` (made by ``@batch_op``).

    ``images`` is a list of HxWxC arrays (they may differ in size before a fixed-size op); the
    function returns a list (or a stacked NxHxWxC array). Run per sample (``numpy``), it sees a
    batch of one; ``run_numpy`` hands it the whole batch.
    """

    batch: ClassVar[bool] = True

    def run(self, x: Any, rng: np.random.Generator, sample: str | Sequence[int] | None) -> Any:
        return self.run_batch([x], rng, _where(sample))[0]

    def run_batch(self, images: list[Any], rng: np.random.Generator, batch: str) -> list[Any]:
        """Run on a list of images; errors name the op and the batch."""
        out = list(self._guarded(images, rng, batch))
        if len(out) != len(images):
            raise CustomOpError(self.name, batch, f"returned {len(out)} images for a batch of {len(images)}")
        return [_check_image(self.name, batch, x, y) for x, y in zip(images, out)]


def _batch_rng(spec: CustomOp, rngs: list[np.random.Generator], entropies: list[Any]) -> np.random.Generator:
    """The batch's generator: from every sample's seed (as the DALI path does), else one draw
    from each sample's generator."""
    if all(e is not None for e in entropies):
        return spec.sample_rng([v for e in entropies for v in e])
    return np.random.default_rng([int(r.integers(2**63)) for r in rngs])


def _batch_label(entropies: list[Any], size: int) -> str:
    records = [e[2] for e in entropies if e is not None and len(e) >= 3]
    return f"the batch of records {records}" if len(records) == size else f"a batch of {size}"


def _listify(value: Any) -> Any:
    return [_listify(v) for v in value] if isinstance(value, tuple) else value


def _where(sample: str | Sequence[int] | None) -> str:
    return sample if isinstance(sample, str) else describe_sample(sample)


def _check_image(name: str, sample: str | Sequence[int] | None, before: Any, out: Any) -> Any:
    """The function must return an HxW or HxWxC array of the input's array library."""
    if type(out).__module__.partition(".")[0] != type(before).__module__.partition(".")[0]:
        raise CustomOpError(name, _where(sample), f"returned {type(out).__name__}, expected an array of the "
                            f"input's kind ({type(before).__name__}); build results with array_namespace(x)")
    if out.ndim == 2:
        out = out[:, :, None]
    if out.ndim != 3:
        raise CustomOpError(name, _where(sample), f"returned shape {tuple(out.shape)}, expected HxWxC")
    return out


def op(function: Callable[..., Any] | None = None, *, vectorized: bool = False) -> Any:
    """Decorator: make ``function(x, rng, **args)`` a per-sample custom operator.

    ``@op(vectorized=True)`` declares that the function treats a stacked batch ``NxHxWxC`` as it
    treats one image (it is elementwise, like adding noise or a gamma curve): the DALI backend
    then runs it once per batch, on the device, which is what makes it cheap on a GPU.

    Example:
        >>> import fastload
        >>> @fastload.op
        ... def invert(x):
        ...     return x.max() - x
        >>> invert
        CustomOp(fastload.ops.custom:invert)
    """
    if function is None:
        return lambda f: CustomOp.wrap(f, vectorized=vectorized)
    return CustomOp.wrap(function, vectorized=vectorized)


def batch_op(function: Callable[..., Any]) -> BatchOp:
    """Decorator: make ``function(images, rng, **args)`` a per-batch custom operator."""
    return BatchOp.wrap(function)  # type: ignore[return-value]


def run_numpy(ops: Sequence[Op], images: list[np.ndarray], rngs: list[np.random.Generator]) -> list[np.ndarray]:
    """Run an op list on a batch with NumPy: per-sample ops on each image, batch ops on the list.

    ``rngs`` holds each sample's generator; a batch op's generator is seeded by one draw from
    each of them, so the whole batch replays from the per-sample seeds.
    """
    images = list(images)
    entropies = [seed_entropy(r) for r in rngs]
    for spec in ops:
        if isinstance(spec, BatchOp):
            images = spec.run_batch(images, _batch_rng(spec, rngs, entropies), _batch_label(entropies, len(images)))
        else:
            done: list[np.ndarray] = []
            try:
                for image, rng in zip(images, rngs):
                    done.append(spec.numpy(image, rng))
            except Exception as exc:
                raise guarded(spec, entropies[len(done)], exc) from exc
            images = done
    return images
