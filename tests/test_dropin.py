"""fastload.Loader as a drop-in for DataLoader, checked with the code that uses one.

The loop patterns people write, DataLoader's keyword arguments, sampler objects, ``loader.dataset``
with ``Subset``, a real ``lightning.Trainer``, DDP under torchrun, and the fastload side of
``examples/imagenet_main.diff`` (the PyTorch ImageNet example on fastload).

Every image of the ``textured`` store holds its record tag in a flat blue channel (crops, flips
and resizes keep it) and a texture in green, so random crops and flips change the pixels.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

import fastload
from fastload import ops
from fastload.compat import DATALOADER_DEFAULTS
from fastload.loader import dali_available

BACKENDS = ["torch"] + (["dali"] if dali_available() else [])
N = 26  # not a multiple of the batch size
BATCH = 8
RANDOM = [ops.RandomResizedCrop(12, scale=(0.3, 1.0)), ops.Flip()]
HERE = os.path.dirname(__file__)


def _write_textured(root, count: int) -> None:
    for i in range(count):
        folder = root / f"class_{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = 30 + i % 5, 36
        image = np.empty((h, w, 3), np.uint8)  # BGR on disk: blue is the tag
        image[..., 0] = i
        image[..., 1] = (np.arange(w)[None, :] * 7 + np.arange(h)[:, None] * 3) % 256
        image[..., 2] = 128
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)


@pytest.fixture(scope="module")
def textured(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("textured") / "data"
    _write_textured(root, N)
    out = str(root) + ".lmdb"
    fastload.pack(root, out, options=fastload.PackOptions(workers=1, progress=False))
    return out


def _loader(store, backend="torch", augment=None, **kw) -> fastload.Loader:
    kw.setdefault("batch_size", BATCH)
    kw.setdefault("num_workers", 0 if backend == "torch" else 1)
    return fastload.Loader(store, augment=augment or [ops.CenterCrop(12)], output_dtype="uint8",
                           layout="NHWC", backend=backend, device="cpu", **kw)


def _tags(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 2].tolist()


def _pass(batches) -> tuple[list[int], torch.Tensor]:
    """(tags in order, images) of an iterable of batches."""
    images = torch.cat([x for x, _ in batches])
    return _tags(images), images


def _by_tag(tags: list[int], images: torch.Tensor) -> dict[int, torch.Tensor]:
    return dict(zip(tags, images))


def _epoch_of(loader_args: dict, epoch: int) -> tuple[list[int], torch.Tensor]:
    """What a fresh loader with these settings yields for ``epoch`` (the reference stream)."""
    reference = _loader(**loader_args)
    reference.set_epoch(epoch)
    return _pass(reference)


# --- loop patterns --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_peek_inside_a_loop_leaves_the_loop_whole(textured, backend):
    def peeking_loop(loader):
        batches = []
        for batch in loader:
            next(iter(loader))  # a peek at a fresh pass, inside the loop
            batches.append(batch)
        return batches

    va = _loader(textured, backend, shuffle=True, seed=1)
    batches = peeking_loop(va)
    assert len(batches) == len(va) == len(peeking_loop(DataLoader(range(N), batch_size=BATCH, shuffle=True)))
    assert sorted(_pass(batches)[0]) == list(range(N))


@pytest.mark.parametrize("backend", BACKENDS)
def test_zip_of_a_loader_with_itself_gives_two_whole_epochs(textured, backend):
    va = _loader(textured, backend, shuffle=True, seed=2)
    pairs = list(zip(va, va))
    assert len(pairs) == len(va) == len(list(zip(*[DataLoader(range(N), batch_size=BATCH)] * 2)))
    first, _ = _pass(a for a, _ in pairs)
    second, _ = _pass(b for _, b in pairs)
    assert sorted(first) == sorted(second) == list(range(N))
    assert first != second  # two iterators, two epochs, as a shuffling DataLoader


@pytest.mark.parametrize("backend", BACKENDS)
def test_passes_of_len_batches_and_broken_passes_each_start_a_new_epoch(textured, backend):
    args = dict(store=textured, backend=backend, augment=RANDOM, shuffle=True, seed=3)
    loader = _loader(**args)
    passes = []
    for _ in range(2):  # Lightning's way: exactly len(loader) batches, never StopIteration
        it = iter(loader)
        passes.append(_pass(next(it) for _ in range(len(loader))))
    for _ in loader:  # broken off after one batch
        break
    passes.append(_pass(loader))  # then a whole pass
    assert loader.state_dict()["epoch"] == 4
    for epoch in (0, 1, 3):
        tags, images = passes.pop(0)
        ref_tags, ref_images = _epoch_of(args, epoch)
        assert tags == ref_tags and torch.equal(images, ref_images)
        assert sorted(tags) == list(range(N))
    first, last = _by_tag(*_epoch_of(args, 0)), _by_tag(tags, images)
    changed = sum(not torch.equal(first[t], last[t]) for t in range(N))
    assert changed > N * 0.8, changed  # new crops and flips, not last epoch's replayed


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_iterator_made_before_set_epoch_takes_that_epoch(textured, backend):
    """Lightning calls iter() in its setup (and once more only to check iterability), then
    sampler.set_epoch(0): the first epoch must be epoch 0, not a copy of epoch 1."""
    args = dict(store=textured, backend=backend, shuffle=True, seed=4)
    loader = _loader(**args)
    iter(loader)  # made and dropped unused: no epoch spent
    it = iter(loader)
    loader.sampler.set_epoch(0)
    assert _pass(it)[0] == _epoch_of(args, 0)[0]
    loader.sampler.set_epoch(1)
    assert _pass(loader)[0] == _epoch_of(args, 1)[0]
    assert _pass(loader)[0] == _epoch_of(args, 1)[0]  # pinned: every pass follows epoch 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_resumed_run_replays_the_pixels_of_the_rest_of_the_epoch(textured, backend):
    args = dict(store=textured, backend=backend, augment=RANDOM, shuffle=True, seed=5)
    first = _loader(**args)
    for _ in first:  # epoch 0, broken off
        break
    seen = []
    for k, (images, _) in enumerate(first):  # epoch 1: two batches, then "crash"
        seen.append(images)
        if k == 1:
            break
    resumed = _loader(**args)
    resumed.load_state_dict(first.state_dict())
    rest = [x for x, _ in resumed]
    assert torch.equal(torch.cat(seen + rest), _epoch_of(args, 1)[1])


# --- DataLoader keywords -------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("num_workers", 2), ("pin_memory", True), ("persistent_workers", True), ("prefetch_factor", 4),
    *[(name, default) for name, (default, _) in DATALOADER_DEFAULTS.items()],
    ("collate_fn", torch.utils.data.default_collate),
])
def test_accepted_dataloader_keywords_change_nothing_but_speed(textured, name, value):
    loader = _loader(textured, shuffle=True, seed=6, **{name: value})
    assert _pass(loader)[0] == _pass(_loader(textured, shuffle=True, seed=6))[0]
    assert loader.num_workers == (2 if name == "num_workers" else 0)
    assert loader.pin_memory == (name == "pin_memory")


@pytest.mark.parametrize("name, value, says", [
    ("collate_fn", lambda batch: batch, "batch_transforms"),
    ("timeout", 5, "no wait to bound"),
    ("worker_init_fn", print, "seed="),
    ("multiprocessing_context", "spawn", "starts its workers itself"),
    ("pin_memory_device", "cuda", "device="),
    ("in_order", False, "planned order"),
    ("batch_sampler", [[0, 1], [2, 3]], "sampler="),
])
def test_refused_dataloader_keywords_say_what_fastload_does_instead(textured, name, value, says):
    with pytest.raises(TypeError, match=rf"does not take {name}=.*{re.escape(says)}"):
        _loader(textured, **{name: value})


def test_every_dataloader_keyword_has_a_meaning_or_a_reason():
    import inspect

    ours = set(inspect.signature(fastload.Loader.__init__).parameters) | set(DATALOADER_DEFAULTS)
    theirs = set(inspect.signature(DataLoader.__init__).parameters) - {"self", "dataset"}
    assert theirs <= ours, f"DataLoader keywords the Loader neither takes nor explains: {theirs - ours}"


def test_array_values_are_refused_not_compared(textured):
    with pytest.raises(TypeError, match="does not take batch_sampler="):
        _loader(textured, batch_sampler=np.array([[0, 1], [2, 3]]))


def test_unknown_keyword_is_a_plain_type_error(textured):
    with pytest.raises(TypeError, match="unexpected keyword argument 'shufle'"):
        _loader(textured, shufle=True)


def test_sampler_and_shuffle_are_exclusive_as_in_dataloader(textured):
    with pytest.raises(ValueError, match="mutually exclusive"):
        _loader(textured, shuffle=True, sampler=[0, 1, 2])


def test_generator_seeds_the_order(textured):
    def order(generator, **kw):
        return _pass(_loader(textured, shuffle=True, generator=generator, **kw))[0]

    same = order(torch.Generator().manual_seed(7))
    assert same == order(torch.Generator().manual_seed(7))
    assert same != order(torch.Generator().manual_seed(8))
    assert order(torch.Generator().manual_seed(8), seed=3) == _pass(_loader(textured, shuffle=True, seed=3))[0]


# --- samplers and the dataset view ----------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_distributed_sampler_over_an_open_store(textured, backend):
    store = fastload.open_store(textured)
    tag_of = {i: int(store.decode(i)[0, 0, 2]) for i in range(len(store))}
    seen = {}
    for rank in range(2):
        sampler = DistributedSampler(store, num_replicas=2, rank=rank, shuffle=True, seed=9)
        loader = _loader(store, backend, sampler=sampler)
        assert loader.sampler is sampler and len(loader.sampler) == -(-N // 2)
        assert len(loader) == -(-len(sampler) // BATCH)
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            seen[rank, epoch] = _pass(loader)[0]
            assert seen[rank, epoch] == [tag_of[i] for i in sampler]  # the sampler's order, as given
    for epoch in range(2):
        assert set(seen[0, epoch]) | set(seen[1, epoch]) == set(range(N))
        assert not set(seen[0, epoch]) & set(seen[1, epoch])  # N is even: no padding
    assert seen[0, 0] != seen[0, 1]


def test_a_sequence_of_indices_is_a_sampler(textured):
    store = fastload.open_store(textured)
    loader = _loader(store, sampler=[5, 0, 9, 9, 2])
    assert len(loader) == 1 and len(loader.sampler) == 5
    assert _pass(loader)[0] == [int(store.decode(i)[0, 0, 2]) for i in (5, 0, 9, 9, 2)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampler_views_reshuffle_through_set_epoch(textured, backend):
    loader = _loader(textured, backend, shuffle=True, seed=10, rank=1, world_size=2)
    assert len(loader.sampler) == N // 2 and len(loader.batch_sampler) == len(loader)
    assert loader.batch_sampler.batch_size == BATCH and loader.batch_sampler.drop_last is False
    loader.sampler.set_epoch(3)
    planned = list(loader.batch_sampler)
    assert [i for batch in planned for i in batch] == list(loader.sampler)
    store = fastload.open_store(textured)
    assert _pass(loader)[0] == [int(store.decode(i)[0, 0, 2]) for batch in planned for i in batch]
    loader.batch_sampler.set_epoch(4)
    assert list(loader.batch_sampler) != planned


def test_dataset_subset_and_a_plain_dataloader(textured):
    loader = _loader(textured, augment=RANDOM, shuffle=False, seed=11)
    dataset = loader.dataset
    assert len(dataset) == N and dataset.classes == loader.store.classes
    image, label = dataset[3]
    assert image.shape == (12, 12, 3) and image.dtype == torch.uint8 and isinstance(label, int)
    subset = Subset(dataset, range(7, 19))
    plain = DataLoader(subset, batch_size=5, num_workers=2)  # the dataset crosses into workers
    images, labels = map(torch.cat, zip(*plain))
    loader.set_epoch(0)  # items are the loader's epoch-0 samples, random draws included
    expected, expected_labels = map(torch.cat, zip(*loader))
    assert torch.equal(images, expected[7:19]) and torch.equal(labels, expected_labels[7:19])
    assert dataset.targets == loader.store.labels.tolist()


def test_torch_datasets_are_refused_with_the_pack_command(tmp_path):
    datasets = pytest.importorskip("torchvision.datasets")
    _write_textured(tmp_path / "folder", 3)
    folder = re.escape(str(tmp_path / "folder"))
    with pytest.raises(TypeError, match=rf"pack the images first \(fastload pack {folder}, which writes {folder}\.lmdb"):
        fastload.Loader(datasets.ImageFolder(str(tmp_path / "folder")), batch_size=2)
    with pytest.raises(TypeError, match="pack the images first"):
        fastload.Loader(torch.utils.data.TensorDataset(torch.zeros(4, 3)), batch_size=2)


def test_a_subset_of_loader_dataset_is_refused_with_the_indices_to_give(textured):
    subset = Subset(_loader(textured, indices=range(2, 20)).dataset, range(3, 9))
    with pytest.raises(TypeError, match=r"indices=subset\.dataset\.records\[subset\.indices\]") as refused:
        fastload.Loader(subset, batch_size=2)
    assert "pack" not in str(refused.value)
    with pytest.raises(TypeError, match=r"indices=dataset\.records"):
        fastload.Loader(subset.dataset, batch_size=2)  # not silently the whole store
    whole = fastload.Loader(_loader(textured).dataset, batch_size=2)
    assert len(whole.dataset) == N
    records = subset.dataset.records[subset.indices]
    loader = _loader(subset.dataset.store, indices=records, batch_size=6)
    assert torch.equal(_pass(loader)[1], torch.stack([subset[i][0] for i in range(6)]))


# --- Lightning ------------------------------------------------------------------------------

def _lightning_module(lightning):
    class Recorder(lightning.LightningModule):
        """Keeps every training batch (per epoch) and every validation batch's tags."""

        def __init__(self, stop_at_step: int | None = None, checkpoint: str | None = None) -> None:
            super().__init__()
            self.net = torch.nn.Linear(3, 3)
            self.train_batches: list[tuple[int, torch.Tensor]] = []
            self.val_tags: list[list[int]] = []
            self.stop_at_step, self.checkpoint = stop_at_step, checkpoint

        def forward(self, images):
            return self.net(images.float().mean((1, 2)) / 255)

        def training_step(self, batch, index):
            images, labels = batch
            self.train_batches.append((self.current_epoch, images.clone()))
            return torch.nn.functional.cross_entropy(self(images), labels)

        def on_train_batch_end(self, outputs, batch, index):
            if self.global_step == self.stop_at_step:
                self.trainer.save_checkpoint(self.checkpoint)
                raise _Crash

        def validation_step(self, batch, index):
            self.val_tags.append(_tags(batch[0]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def epoch(self, epoch: int) -> tuple[list[int], torch.Tensor]:
            return _pass((x, None) for e, x in self.train_batches if e == epoch)

    return Recorder


class _Crash(Exception):
    pass


def _trainer(lightning, **kw):
    return lightning.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lightning_reshuffles_and_reaugments_every_epoch(textured, backend):
    lightning = pytest.importorskip("lightning")
    args = dict(store=textured, backend=backend, augment=RANDOM, shuffle=True, seed=12)
    model = _lightning_module(lightning)()
    val = _loader(textured, backend, batch_size=10)
    _trainer(lightning, val_check_interval=0.5).fit(model, _loader(**args), val)
    epochs = [model.epoch(e) for e in range(3)]
    for e, (tags, images) in enumerate(epochs):  # the train stream, untouched by validation
        assert sorted(tags) == list(range(N))
        ref_tags, ref_images = _epoch_of(args, e)
        assert tags == ref_tags and torch.equal(images, ref_images)
    assert len({tuple(tags) for tags, _ in epochs}) == 3  # a new order every epoch
    for a, b in ((0, 1), (1, 2)):
        first, second = _by_tag(*epochs[a]), _by_tag(*epochs[b])
        assert sum(not torch.equal(first[t], second[t]) for t in range(N)) > N * 0.8  # new crops
    # validation: the sanity check's 2 batches, then whole passes twice an epoch
    assert len(model.val_tags) == 2 + 3 * 2 * len(val)
    assert sum(model.val_tags[2:], []) == sorted(range(N), key=lambda t: (t % 3, t)) * 6


def test_lightning_resumes_mid_epoch_from_its_checkpoint(textured, tmp_path):
    """Lightning saves and restores the Loader's state_dict with its loops."""
    lightning = pytest.importorskip("lightning")
    args = dict(store=textured, augment=RANDOM, shuffle=True, seed=13)
    recorder = _lightning_module(lightning)
    whole = recorder()
    _trainer(lightning).fit(whole, _loader(**args))
    crashed = recorder(stop_at_step=6, checkpoint=str(tmp_path / "mid.ckpt"))  # epoch 1, batch 2
    with pytest.raises(_Crash):
        _trainer(lightning).fit(crashed, _loader(**args))
    resumed = recorder()
    _trainer(lightning).fit(resumed, _loader(**args), ckpt_path=str(tmp_path / "mid.ckpt"))
    replay = torch.cat([x for _, x in crashed.train_batches + resumed.train_batches])
    assert torch.equal(replay, torch.cat([x for _, x in whole.train_batches]))
    assert [e for e, _ in resumed.train_batches] == [1, 1, 2, 2, 2, 2]


# --- DDP under torchrun ---------------------------------------------------------------------

def test_ddp_under_torchrun_reshuffles_through_loader_sampler(textured, tmp_path):
    worker = os.path.join(HERE, "dropin_ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           worker, textured, str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, timeout=240, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    for backend in BACKENDS:
        seen = [r[backend] for r in ranks]
        assert seen[0]["batches"] == seen[1]["batches"] == -(-(N // 2) // 4)
        assert seen[0]["samples"] == seen[1]["samples"] == N // 2
        for epoch in ("0", "1"):
            a, b = (s["tags"][epoch] for s in seen)
            assert len(a) == len(b) == N // 2
            assert set(a) | set(b) == set(range(N)) and not set(a) & set(b)
        for s in seen:
            assert s["tags"]["0"] != s["tags"]["1"]  # set_epoch through loader.sampler reshuffles
            pixels = [dict(zip(s["tags"][e], s["pixels"][e])) for e in ("0", "1")]
            both = set(pixels[0]) & set(pixels[1])
            assert sum(pixels[0][t] != pixels[1][t] for t in both) >= len(both) * 0.6


# --- the ImageNet example on fastload (examples/imagenet_main.diff) -------------------------

def _patched_statements() -> dict[str, str]:
    """``name = fastload...(...)`` statements the patch writes into main.py, by name."""
    diff = open(os.path.join(HERE, os.pardir, "examples", "imagenet_main.diff"), encoding="utf-8").read()
    hunks = re.split(r"^@@.*@@\n", diff, flags=re.M)[1:]
    after = "\n".join(line[1:] for hunk in hunks for line in hunk.splitlines() if line[:1] in (" ", "+"))
    statements = {}
    for found in re.finditer(r"^\s*(\w+) = (fastload\.\w+\()", after, flags=re.M):
        start, depth = found.start(2), 0
        for end in range(start, len(after)):
            depth += {"(": 1, ")": -1}.get(after[end], 0)
            if depth == 0 and after[end] == ")":
                break
        statements[found.group(1)] = " ".join(after[start:end + 1].split())
    return statements


def test_imagenet_patch_replaces_only_the_data_constructors():
    statements = _patched_statements()
    assert sorted(statements) == ["train_dataset", "train_loader", "val_dataset", "val_loader"]
    diff = open(os.path.join(HERE, os.pardir, "examples", "imagenet_main.diff"), encoding="utf-8").read()
    removed = [line[1:].strip() for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert sum(line.endswith("= torch.utils.data.DataLoader(") for line in removed) == 2
    assert sum(line.startswith(("train_dataset =", "val_dataset =")) for line in removed) == 2


@pytest.mark.parametrize("distributed", [False, True])
def test_imagenet_patch_loaders_give_main_py_what_it_reads(tmp_path, distributed):
    """Build the loaders with the patch's own statements and use them as main.py does."""
    for split, count in (("train", 12), ("val", 7)):
        _write_textured(tmp_path / split, count)
        fastload.pack(tmp_path / split, options=fastload.PackOptions(workers=1, progress=False))
    args = SimpleNamespace(batch_size=4, workers=1, distributed=distributed, world_size=2 if distributed else 1)
    space = {"fastload": fastload, "args": args, "traindir": str(tmp_path / "train"),
             "valdir": str(tmp_path / "val")}
    statements = _patched_statements()
    for name in ("train_dataset", "val_dataset"):
        space[name] = eval(statements[name], space)
    # main.py's sampler lines, with the rank given (no process group here)
    if distributed:
        space["train_sampler"] = DistributedSampler(space["train_dataset"], num_replicas=2, rank=1)
        space["val_sampler"] = DistributedSampler(space["val_dataset"], num_replicas=2, rank=1,
                                                  shuffle=False, drop_last=True)
    else:
        space["train_sampler"] = space["val_sampler"] = None
    train_loader = eval(statements["train_loader"], space)
    val_loader = eval(statements["val_loader"], space)

    orders = []
    for epoch in range(2):  # main.py's epoch loop
        if args.distributed:
            space["train_sampler"].set_epoch(epoch)
        batches = [(images, target) for images, target in train_loader]
        assert len(batches) == len(train_loader)
        assert batches[0][0].shape[1:] == (3, 224, 224) and batches[0][0].dtype == torch.float32
        orders.append(torch.cat([t for _, t in batches]))
    assert len(orders[0]) == (6 if distributed else 12)

    # validate(): the progress length, the pass, and the tail the distributed sampler drops
    tail = args.distributed and (len(val_loader.sampler) * args.world_size < len(val_loader.dataset))
    assert bool(tail) == distributed  # 7 val images over 2 ranks with drop_last: one left over
    assert sum(len(t) for _, t in val_loader) == (3 if distributed else 7)
    if tail:
        aux = Subset(val_loader.dataset, range(len(val_loader.sampler) * args.world_size, len(val_loader.dataset)))
        aux_loader = DataLoader(aux, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                                pin_memory=True)
        images, target = next(iter(aux_loader))
        assert images.shape == (1, 3, 224, 224) and target.tolist() == [val_loader.store.labels[6]]
