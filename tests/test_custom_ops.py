"""Custom operators (@fastload.op / @fastload.batch_op) and the shipped library of them."""

from __future__ import annotations

import multiprocessing
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastload
from fastload import ops
from fastload.ops import CustomOpError

try:
    import nvidia.dali  # noqa: F401

    HAS_DALI = True
except ImportError:
    HAS_DALI = False

try:
    import cupy

    HAS_CUPY = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # no cupy, or no CUDA device
    HAS_CUPY = False

needs_dali = pytest.mark.skipif(not HAS_DALI, reason="needs NVIDIA DALI")


@fastload.op
def add_noise(x, rng, sigma=0.05):
    xp = fastload.array_namespace(x)
    return x + sigma * xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)


@fastload.op
def invert(x):
    xp = fastload.array_namespace(x)
    return xp.asarray(np.iinfo(x.dtype).max if x.dtype.kind == "u" else 1, dtype=x.dtype) - x


@fastload.op
def broken(x, rng):
    raise ValueError("no good")


@fastload.op
def returns_list(x):
    return [1, 2, 3]


@fastload.batch_op
def subtract_batch_mean(images, rng):
    xp = fastload.array_namespace(images[0])
    mean = xp.mean(xp.stack([im.astype(xp.float32) for im in images]), axis=0)
    return [(im.astype(xp.float32) - mean) for im in images]


def image(kind: str = "six_float", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "rgb8":
        return rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    if kind == "gray16":
        y, x = np.mgrid[0:32, 0:40]
        return ((x * 40 + y) * 40 + rng.integers(0, 30, (32, 40))).astype(np.uint16)[:, :, None]
    if kind == "six16":
        return rng.integers(0, 65536, (32, 40, 6), dtype=np.uint16)
    return rng.random((32, 40, 6), dtype=np.float32)


KINDS = ["rgb8", "gray16", "six16", "six_float"]


def _apply_in_child(spec, x, seed):
    return spec.numpy(x, np.random.default_rng(seed))


# --- the decorator and the spec -----------------------------------------------------------------
def test_the_issue_example_runs_and_replays():
    x = image()
    spec = add_noise.with_args(sigma=0.02)
    a = spec.numpy(x, np.random.default_rng([0, 0, 5]))
    assert a.shape == x.shape and a.dtype == x.dtype and not np.array_equal(a, x)
    assert np.array_equal(a, spec.numpy(x, np.random.default_rng([0, 0, 5])))
    assert not np.array_equal(a, spec.numpy(x, np.random.default_rng([0, 0, 6])))
    assert (a - x).std() == pytest.approx(0.02, rel=0.1)


def test_with_args_binds_merges_and_checks_names():
    spec = add_noise.with_args(sigma=0.1).with_args(sigma=0.3)
    assert dict(spec.args) == {"sigma": 0.3}
    assert spec == add_noise.with_args(sigma=0.3) and spec != add_noise
    with pytest.raises(TypeError, match="sigmaa"):
        add_noise.with_args(sigmaa=1)


def test_function_without_rng_and_direct_call():
    x = image("six16")
    assert np.array_equal(invert.numpy(x, np.random.default_rng(0)), 65535 - x)
    assert np.array_equal(invert(x), 65535 - x)


def test_errors_name_the_op_and_the_record():
    with pytest.raises(CustomOpError, match=r"'broken'.*record 17 \(epoch 2, seed 0\).*ValueError: no good"):
        broken.numpy(image(), np.random.default_rng([0, 2, 17]))
    with pytest.raises(CustomOpError, match="returns_list.*returned list"):
        returns_list.numpy(image(), np.random.default_rng(0))


def test_array_namespace():
    assert fastload.array_namespace(np.zeros(2)) is np
    with pytest.raises(TypeError):
        fastload.array_namespace([1, 2])


def test_pickles_by_reference_and_runs_in_spawned_workers():
    spec = add_noise.with_args(sigma=0.1)
    assert pickle.loads(pickle.dumps(spec)) == spec  # noqa: S301  (our own bytes: the spec crosses to workers this way)
    x = image()
    expected = spec.numpy(x, np.random.default_rng(3))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_apply_in_child, (spec, x, 3))
    assert np.array_equal(got, expected)


def test_local_function_works_here_but_refuses_to_cross_processes():
    @fastload.op
    def local(x):
        return x * 2

    assert np.array_equal(local.numpy(image(), np.random.default_rng(0)), image() * 2)
    with pytest.raises(CustomOpError, match="module level"):
        pickle.dumps(local)


def test_op_defined_in_main_script_works_in_spawn_workers(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing
        import numpy as np
        import fastload

        @fastload.op
        def double(x, rng, k=2):
            return x * k

        def work(spec):
            return float(spec.numpy(np.ones((4, 4, 1), np.float32), np.random.default_rng(0)).sum())

        if __name__ == "__main__":
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                print(pool.apply(work, (double.with_args(k=3),)))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "48.0"


def test_batch_op_sees_the_whole_batch_in_run_numpy():
    xs = [image(seed=s) for s in range(3)]
    rngs = [np.random.default_rng([0, 0, i]) for i in range(3)]
    out = ops.run_numpy([ops.Flip(p=0.0), subtract_batch_mean], xs, rngs)
    assert np.allclose(np.mean(out, axis=0), 0, atol=1e-6)
    single = subtract_batch_mean.numpy(xs[0], np.random.default_rng(0))  # a batch of one
    assert np.allclose(single, 0)


# --- the shipped library ---------------------------------------------------------------------------
LIBRARY = [ops.RandomErasing(p=1.0), ops.RandomErasing(p=1.0, value="random"), ops.GaussianNoise(0.02),
           ops.HistogramEqualization(), ops.ChannelIntensityScale(shift=(-0.05, 0.05))]


@pytest.mark.parametrize("spec", LIBRARY, ids=repr)
@pytest.mark.parametrize("kind", KINDS)
def test_library_ops_keep_shape_type_and_depth(spec, kind):
    x = image(kind)
    out = spec.numpy(x, np.random.default_rng([1, 0, 4]))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.array_equal(out, spec.numpy(x, np.random.default_rng([1, 0, 4])))
    if kind == "gray16":
        assert len(np.unique(out)) > 256


def test_histogram_equalization_spreads_a_narrow_16_bit_range():
    x = image("gray16") // 16 + 1000  # a dim, low-contrast X-ray
    out = ops.HistogramEqualization().numpy(x, np.random.default_rng(0))
    assert out.min() == 0 and out.max() == 65535
    order = np.argsort(x.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(np.int64)) >= 0)  # monotone: no inversions


def test_random_erasing_fills_one_rectangle():
    x = image("rgb8") | 1
    out = ops.RandomErasing(p=1.0, value=0.0).numpy(x, np.random.default_rng(0))
    ys, xs = np.nonzero((out == 0).all(axis=2))
    assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


def test_channel_intensity_scale_uses_one_gain_per_channel():
    x = image("six_float") + 0.5
    out = ops.ChannelIntensityScale(scale=(0.5, 2.0)).numpy(x, np.random.default_rng(0))
    gains = (out / x).reshape(-1, 6)
    assert np.allclose(gains, gains[0], rtol=1e-5) and len(np.unique(gains[0].round(4))) == 6


# --- DALI: fn.python_function -----------------------------------------------------------------------
@needs_dali
@pytest.mark.parametrize("spec", [add_noise.with_args(sigma=0.1), invert, *LIBRARY], ids=repr)
@pytest.mark.parametrize("kind", ["gray16", "six_float"])
def test_dali_python_function_matches_numpy_path(spec, kind):
    from dali_helpers import run_dali

    if spec is invert and kind == "six_float":
        pytest.skip("covered by gray16")
    xs = [image(kind, 0), image(kind, 1)]
    ids = [np.array([7, 1, 40], np.int64), np.array([7, 1, 41], np.int64)]
    got = run_dali([spec], xs, ids=ids)
    for x, out, record in zip(xs, got, (40, 41)):
        assert np.array_equal(out, spec.numpy(x, np.random.default_rng([7, 1, record])))


@needs_dali
def test_dali_without_sample_ids_is_seeded_by_the_pipeline():
    from dali_helpers import run_dali

    xs = [image(), image(seed=1)]
    a = run_dali([add_noise], xs, seed=3)
    assert np.array_equal(a, run_dali([add_noise], xs, seed=3))
    assert not np.array_equal(a, run_dali([add_noise], xs, seed=4))


@needs_dali
def test_dali_batch_op_and_errors():
    from dali_helpers import run_dali

    xs = [image(seed=s) for s in range(3)]
    out = run_dali([subtract_batch_mean], xs)
    assert np.allclose(np.mean(out, axis=0), 0, atol=1e-6)
    ids = [np.array([0, 3, i], np.int64) for i in (10, 11, 12)]
    with pytest.raises(RuntimeError, match=r"'broken' failed on record 10 \(epoch 3, seed 0\)"):
        run_dali([broken], xs, ids=ids)


@pytest.mark.gpu
@needs_dali
@pytest.mark.skipif(not HAS_CUPY, reason="needs CuPy with a CUDA device")
@pytest.mark.parametrize("spec", [invert, ops.HistogramEqualization(), ops.ChannelIntensityScale(), add_noise], ids=repr)
def test_cupy_path_agrees_with_numpy_path(spec):
    """On the GPU the function gets CuPy arrays (by DLPack); the same numbers come out."""
    from dali_helpers import run_dali

    xs = [image("gray16", 0), image("gray16", 1)]
    ids = [np.array([0, 0, 1], np.int64), np.array([0, 0, 2], np.int64)]
    gpu = run_dali([spec], xs, ids=ids, device="gpu")
    cpu = run_dali([spec], xs, ids=ids, device="cpu")
    for g, c in zip(gpu, cpu):
        assert np.abs(g.astype(np.float64) - c.astype(np.float64)).max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUPY, reason="needs CuPy with a CUDA device")
@pytest.mark.parametrize("spec", LIBRARY, ids=repr)
def test_library_runs_on_cupy_arrays(spec):
    x = image("six16")
    out = spec.run(cupy.asarray(x), np.random.default_rng(0), "a test sample")
    assert isinstance(out, cupy.ndarray) and out.shape == x.shape and out.dtype == x.dtype


# --- through the Loader --------------------------------------------------------------------------
AUGMENT = [ops.RandomResizedCrop(32), ops.Flip(horizontal=True, vertical=True), ops.Rotate(max_degrees=15),
           ops.ColorJitter(brightness=0.2, contrast=0.2), ops.RandomErasing(p=0.5), ops.GaussianNoise(0.01),
           add_noise.with_args(sigma=0.02), ops.Normalize()]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_runs_custom_ops_and_replays(small_lmdb, workers):
    def first_batch():
        loader = fastload.Loader(small_lmdb, batch_size=4, augment=AUGMENT, backend="torch", device="cpu",
                                 num_threads=workers, seed=3)
        images, _ = next(iter(loader))
        loader.close()
        return images

    a = first_batch()
    assert a.shape == (4, 3, 32, 32)
    assert np.array_equal(a.numpy(), first_batch().numpy())


def test_loader_takes_a_config_file(small_lmdb, tmp_path):
    path = tmp_path / "aug.yaml"
    ops.save_config(AUGMENT, path)
    kwargs = dict(batch_size=4, backend="torch", device="cpu", num_threads=0, seed=1)
    from_file = fastload.Loader(small_lmdb, augment=str(path), **kwargs)
    from_list = fastload.Loader(small_lmdb, augment=AUGMENT, **kwargs)
    assert from_file.ops == AUGMENT
    assert np.array_equal(next(iter(from_file))[0].numpy(), next(iter(from_list))[0].numpy())


def test_loader_errors_name_the_custom_op_and_record(small_lmdb):
    loader = fastload.Loader(small_lmdb, batch_size=2, augment=[broken], backend="torch", device="cpu",
                             num_threads=0)
    with pytest.raises(CustomOpError, match=r"'broken' failed on record \d+ \(epoch 0"):
        next(iter(loader))
