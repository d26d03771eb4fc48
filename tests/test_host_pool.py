"""The host stage in worker processes (``host_workers``): the threads' batches, errors that name
the worker or the batch, batches a caller keeps, and where it falls back to threads."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from imagefiles import npy, pixels, png16, write

import fastload
from fastload import ops
from fastload.backends.dali.host import HostFinish
from fastload.backends.dali.host_pool import HostPool, HostSpec, _even_chunks
from fastload.backends.dali.params import ParamLayout
from fastload.output import OutputSpec

pytest.importorskip("nvidia.dali")

PRESET = [ops.RandomResizedCrop(24), ops.Flip(), ops.Normalize()]


def _loader(store, host_workers, **kw):
    kw = {"augment": PRESET, "image_size": 24, "batch_size": 8, "shuffle": True, "seed": 5, **kw}
    return fastload.Loader(store, backend="dali", device="cpu", num_threads=2, host_workers=host_workers, **kw)


def _host(loader):
    return loader._get_backend()._engines[0].host


def _same_batches(store, workers=2, **kw):
    """Two epochs with the host stage on threads and in processes: the same batches."""
    threads, processes = _loader(store, 0, **kw), _loader(store, workers, **kw)
    for _ in range(2):
        for (a, la), (b, lb) in zip(threads, processes, strict=True):
            assert torch.equal(la, lb) and a.dtype == b.dtype and torch.equal(a, b)
    assert isinstance(_host(threads), HostFinish) and isinstance(_host(processes), HostPool)
    processes.close()


@pytest.mark.parametrize("workers, kw", [
    (2, {}),
    (1, {"augment": [ops.RandomResizedCrop(24), ops.Flip(horizontal=True, vertical=True), ops.Rotate(max_degrees=15),
                     ops.ColorJitter(0.4, 0.4, 0.4, 0.1), ops.GaussianBlur(sigma=(0.1, 2.0)), ops.Normalize()]}),
    (1, {"output_dtype": "uint8"}),
    (1, {"layout": "NHWC", "output_dtype": "float16"}),
], ids=["preset", "rotate-colorjitter-blur", "uint8", "nhwc-float16"])
def test_host_workers_give_the_threads_batches(small_lmdb, workers, kw):
    _same_batches(small_lmdb, workers, **kw)


def test_host_workers_on_hdf5_eval_and_a_short_last_batch(small_h5):
    _same_batches(small_h5, 1, augment="eval", batch_size=7)  # 24 records: the last batch holds 3


def _folder(root, name, data):
    for c in range(2):
        for i in range(5):
            write(os.path.join(root, f"c{c}", f"{i}.{name}"), data(10 * c + i))
    return str(root)


def test_host_workers_on_16_bit_gray_and_6_channel_raw_stores(tmp_path):
    """16-bit PNGs DALI decodes, and a raw 6-channel store whose arrays the host stage takes from
    the feed's slots: the same batches in processes."""
    gray = _folder(tmp_path / "gray", "png", lambda s: png16(pixels(40, 48, 1, seed=s, dtype=np.uint16)))
    fastload.pack(gray, str(tmp_path / "gray.lmdb"), options=fastload.PackOptions(workers=1, progress=False))
    six = _folder(tmp_path / "six", "npy", lambda s: npy(pixels(40, 48, 6, seed=s)))
    fastload.pack(six, str(tmp_path / "six.lmdb"), options=fastload.PackOptions(workers=1, progress=False,
                                                                                 payload="raw"))
    augment = [ops.RandomResizedCrop(24), ops.Flip(horizontal=True, vertical=True), ops.Normalize()]
    _same_batches(str(tmp_path / "gray.lmdb"), 1, augment=augment, batch_size=4)
    _same_batches(str(tmp_path / "six.lmdb"), 1, augment=augment, batch_size=4)


def test_batches_a_caller_keeps_stay_intact(small_lmdb):
    """Output batches are reused only once nothing refers to them; a caller that keeps them all
    gets copies, never a batch written over."""
    loader, reference = _loader(small_lmdb, 2, batch_size=2), _loader(small_lmdb, 0, batch_size=2)
    kept = [images for _ in range(2) for images, _ in loader]  # 24 batches: far more than the slots
    expected = [images.clone() for _ in range(2) for images, _ in reference]
    assert len(kept) == len(expected) == 24
    for a, b in zip(kept, expected):
        assert torch.equal(a, b)


def test_a_killed_host_worker_is_named_and_the_next_pass_starts_afresh(small_lmdb):
    loader = _loader(small_lmdb, 2)
    passes = iter(loader)
    next(passes)
    pool = _host(loader)
    victim = pool._workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait()  # dead before the next batch is asked for: no timing involved
    with pytest.raises(fastload.WorkerDiedError, match=rf"fastload host worker 0 \(pid {victim.pid}\).*SIGKILL"):
        for _ in passes:
            pass
    assert sum(len(images) for images, _ in loader) == 24  # a new pass builds a new engine


def test_an_error_in_a_host_worker_is_raised_and_the_pool_goes_on():
    """An op failing in a worker (here: images of 4 channels where the output has 3) raises its
    error in the Loader's process, after every chunk is answered; the next batch is served."""
    augment = [ops.RandomResizedCrop(8), ops.Flip()]
    finish = HostFinish(augment, ParamLayout(augment), cut=False, threads=2, output=OutputSpec())
    pool = HostPool(finish, HostSpec.of(finish), 2, 4, "test")
    params = np.array([ParamLayout(augment).draw(0, 0, i, 12, 12) for i in range(4)], np.float32)
    with pytest.raises(ValueError, match="raised in fastload host worker"):
        pool([pixels(12, 12, 4, seed=i) for i in range(4)], params)
    good = [pixels(12, 12, 3, seed=i) for i in range(4)]
    assert torch.equal(pool(good, params), finish(good, params))
    pids = pool.pids
    pool.close()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)


@fastload.op
def _darker(x):
    return x * 0.9


@fastload.op
def _corner(x):  # a custom op that decides the size: the host stage learns it from a first sample
    return x[:20, :18]


@pytest.mark.parametrize("augment", [[*PRESET[:2], _darker, ops.Normalize()], [*PRESET[:2], _corner],
                                     [_corner, *PRESET]],  # a crop after it: the stage draws
                         ids=["darker", "corner", "corner-then-crop"])
def test_custom_ops_a_worker_can_import_run_in_the_workers(small_lmdb, augment):
    _same_batches(small_lmdb, 1, augment=augment)


@fastload.op
def _halve(x):
    return x[: x.shape[0] // 2, : x.shape[1] // 2]


def test_a_batch_that_comes_out_in_another_size_than_the_last_is_sized_again():
    """Where a custom op decides the size, a batch is laid out as the last one came out; one that
    comes out otherwise is sized from its first sample and run again, as the threads size each
    batch; samples of two sizes in one batch fail on both, naming the record."""
    finish = HostFinish([_halve], ParamLayout([_halve]), cut=False, threads=2, output=OutputSpec())
    pool = HostPool(finish, HostSpec.of(finish), 2, 4, "test")
    params = np.zeros((4, 0), np.float32)
    for side in (12, 12, 16, 10):
        images = [pixels(side, side, 3, seed=i) for i in range(4)]
        batch = pool(images, params)
        assert batch.shape == (4, 3, side // 2, side // 2) and torch.equal(batch, finish(images, params))
    mixed = [pixels(10 + 2 * (i % 2), 10, 3, seed=i) for i in range(4)]
    for stage in (finish, pool):
        with pytest.raises(fastload.SampleShapeError, match=r"record \d .*\((5|6), 5, 3\) uint8 while .*\((6|5), 5, 3\)"):
            stage(mixed, params)
    pool.close()


def test_what_processes_cannot_run_stays_on_threads(small_lmdb):
    """A custom op no worker can import (defined inside a function) and test-time views stay on
    the threads, with host_workers or without."""
    @fastload.op
    def local(x):
        return x

    for kw, why in (({"augment": [*PRESET[:2], local, ops.Normalize()]}, "defined inside a function"),
                    ({"augment": "eval", "tta": "hflip"}, "test-time views")):
        loader = _loader(small_lmdb, 2, **kw)
        with pytest.warns(UserWarning, match=f"host stage runs on threads instead: .*{why}"):
            assert sum(len(images) for images, _ in loader) == 24
        assert isinstance(_host(loader), HostFinish)


def test_host_workers_without_a_host_stage_say_they_have_no_effect(small_lmdb):
    """An op list DALI's operators run (images of their own sizes, a tail evens them) has no host stage."""
    with pytest.warns(UserWarning, match="host_workers=2 has no effect: DALI's operators run this op list"):
        loader = _loader(small_lmdb, 2, augment=[ops.Resize(shorter=30), ops.Normalize()])
        loader._get_backend()


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_host_workers_must_be_a_count(small_lmdb, value):
    with pytest.raises((ValueError, TypeError), match="host_workers"):
        _loader(small_lmdb, value)


def test_chunks_split_the_pixels_evenly():
    assert _even_chunks(np.ones(64), 4) == [range(0, 16), range(16, 32), range(32, 48), range(48, 64)]
    assert _even_chunks(np.array([5, 1, 1, 1, 1, 1, 10, 1]), 4) == [range(0, 1), range(1, 6), range(6, 8)]
    assert _even_chunks(np.ones(3), 8) == [range(0, 1), range(1, 2), range(2, 3)]
    assert _even_chunks(np.ones(0), 4) == []
