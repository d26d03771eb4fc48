"""A training script's torchvision transforms as fastload ops (``ops.from_torchvision``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms as v1
from torchvision.transforms import v2

import fastload
from fastload import ops

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("T", [v1, v2], ids=["transforms", "v2"])
def test_a_self_supervised_train_recipe_converts_op_for_op(T):
    to_float = [T.ToTensor()] if T is v1 else [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
    recipe = T.Compose([
        T.RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2), T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5),
        T.RandomSolarize(128, p=0.2), *to_float, T.Normalize(MEAN, STD), T.RandomErasing(p=0.25),
    ])
    assert ops.from_torchvision(recipe) == [
        ops.RandomResizedCrop(224, scale=(0.2, 1.0)), ops.Flip(horizontal=True, p=0.5),
        ops.ColorJitter((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1), p=0.8), ops.RandomGrayscale(p=0.2),
        ops.GaussianBlur(sigma=(0.1, 2.0), p=0.5), ops.RandomSolarize(threshold=128 / 255, p=0.2),
        ops.Normalize(mean=MEAN, std=STD), ops.RandomErasing(p=0.25, value=0.0),
    ]


@pytest.mark.parametrize("T", [v1, v2], ids=["transforms", "v2"])
def test_geometry_and_policies_convert(T):
    recipe = T.Compose([
        T.Resize(256), T.CenterCrop(224), T.RandomRotation(10), T.RandomVerticalFlip(),
        T.RandomAffine(5, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=3, interpolation=T.InterpolationMode.BILINEAR),
        T.RandomCrop(32, padding=4, padding_mode="reflect"), T.TrivialAugmentWide(), T.RandAugment(),
        T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
    ])
    got = ops.from_torchvision(recipe)
    assert got[:4] == [ops.Resize(shorter=256), ops.CenterCrop(224),
                       ops.RandomAffine(degrees=(-10.0, 10.0), interpolation="nearest"),  # counter-clockwise
                       ops.Flip(horizontal=False, vertical=True)]
    assert got[4] == ops.RandomAffine((-5.0, 5.0), translate=(0.1, 0.1), scale=(0.9, 1.1), shear=(-3.0, 3.0))
    assert got[5].padding_mode == "reflect" and got[5].size == 32 and not got[5].pad_if_needed
    assert got[6:] == [ops.TrivialAugmentWide(), ops.RandAugment(num_ops=2, magnitude=9), ops.AutoAugment("cifar10")]
    assert ops.from_torchvision(T.Resize((256, 256))) == [ops.Resize(size=(256, 256))]  # exactly, not the shorter side
    assert ops.from_torchvision(T.RandomErasing(value="random")) == [ops.RandomErasing(value="random")]
    assert ops.from_torchvision(T.Grayscale(num_output_channels=3)) == [ops.RandomGrayscale(p=1.0)]
    adjustments = T.Compose([T.RandomEqualize(0.3), T.RandomAutocontrast(0.4), T.RandomInvert(0.1),
                             T.RandomPosterize(5, p=0.2), T.RandomAdjustSharpness(1.5, p=0.6)])
    assert ops.from_torchvision(adjustments) == [ops.RandomEqualize(0.3), ops.RandomAutocontrast(0.4),
                                                ops.RandomInvert(0.1), ops.RandomPosterize(5, p=0.2),
                                                ops.RandomAdjustSharpness(1.5, p=0.6)]


def test_converted_ops_give_torchvisions_pixels_where_nothing_is_random():
    """A rotation by a fixed angle (counter-clockwise in torchvision, clockwise in RandomAffine's
    terms), a flip, a crop and the normalize: torchvision v2 on the tensor, within float rounding."""
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3)).astype(np.uint8)
    recipe = v2.Compose([v2.RandomRotation((20, 20)), v2.RandomHorizontalFlip(p=1.0), v2.CenterCrop(32),
                         v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    want = recipe(torch.from_numpy(image).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    got = ops.run_numpy(ops.from_torchvision(recipe), [image], [np.random.default_rng(0)])[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("transform,match", [
    (v2.Lambda(lambda x: x), "Lambda.*no fastload counterpart.*fastload.op"),
    (v2.RandomPerspective(), "RandomPerspective.*no fastload counterpart"),
    (v1.Resize(256, max_size=300), "max_size"),
    (v2.RandomApply([v2.ColorJitter(0.4), v2.RandomGrayscale()], p=0.5), "its own RandomApply"),
    (v2.RandomRotation(10, expand=True), "expand=False"),
    (v2.RandomAffine(10, fill=(0, 10, 20)), "one value"),
    (v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR), "nearest"),
    (v2.Grayscale(), "keeps the channel count"),
])
def test_what_does_not_carry_over_is_refused_by_name(transform, match):
    with pytest.raises(ValueError, match=match):
        ops.from_torchvision(v2.Compose([v2.RandomResizedCrop(32), transform]))


def test_the_loader_takes_the_scripts_compose_as_augment(small_lmdb):
    recipe = v2.Compose([v2.RandomResizedCrop(24), v2.RandomHorizontalFlip(), v2.ToImage(),
                         v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    loader = fastload.Loader(small_lmdb, batch_size=4, augment=recipe, backend="torch", device="cpu", num_threads=0)
    assert loader.ops == ops.from_torchvision(recipe)
    images, _ = next(iter(loader))
    assert images.shape == (4, 3, 24, 24) and images.dtype == torch.float32
