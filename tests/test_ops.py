"""Built-in operators: every pixel type and channel count, reproducibility, NumPy vs DALI."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from reference import normalized

from fastload import ops
from fastload.pixels import by_channel_chunks

try:
    import nvidia.dali  # noqa: F401

    HAS_DALI = True
except ImportError:
    HAS_DALI = False

needs_dali = pytest.mark.skipif(not HAS_DALI, reason="needs NVIDIA DALI")


def smooth(height: int, width: int, channels: int, dtype: type, seed: int = 0) -> np.ndarray:
    """Gradients plus a little texture: many distinct values (>256 for 16-bit)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [0.5 + 0.4 * np.sin(x / (4 + c) + y / (6 + c)) * np.cos(y / 9) + rng.normal(0, 0.02, x.shape)
              for c in range(channels)]
    image = np.clip(np.stack(planes, axis=-1), 0, 1)
    if np.dtype(dtype).kind == "f":
        return image.astype(dtype)
    return np.rint(image * np.iinfo(dtype).max).astype(dtype)


IMAGES = {
    "rgb8": smooth(48, 56, 3, np.uint8),
    "gray16": smooth(48, 56, 1, np.uint16),
    "six_float": smooth(48, 56, 6, np.float32),
    "six16": smooth(48, 56, 6, np.uint16),
}

BUILTIN = [
    ops.RandomResizedCrop(32, scale=(0.3, 1.0)),
    ops.Resize(shorter=40),
    ops.CenterCrop(32),
    ops.RandomCrop(32, padding=4),
    ops.RandomCrop((60, 40), padding=(2, 0), fill=7),  # taller than the images: padded as needed
    ops.RandomCrop(32, padding=(4, 6, 3, 2), padding_mode="reflect"),
    ops.RandomCrop((52, 40), padding=3, padding_mode="symmetric"),  # taller than the images: mirrored as needed
    ops.RandomCrop(32, padding=4, padding_mode="edge"),
    ops.Flip(horizontal=True, vertical=True, p=1.0),
    ops.Rotate(max_degrees=30),
    ops.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.8, 1.2), shear=(-5, 5, -5, 5)),
    ops.RandomAffine(degrees=10, scale=(0.9, 1.1), fill=7, interpolation="nearest"),
    ops.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1),
    ops.ColorJitter(brightness=0.3, contrast=0.3, p=0.5),
    ops.RandomGrayscale(p=0.5),
    ops.RandomSolarize(p=0.5),
    ops.RandomSolarize(threshold=0.3, p=1.0),
    ops.GaussianBlur(sigma=(0.5, 1.5)),
    ops.TrivialAugmentWide(),
    ops.RandAugment(num_ops=2, magnitude=15),
    ops.AutoAugment("svhn"),  # inverts often
    ops.RandomEqualize(p=0.5), ops.RandomAutocontrast(p=1.0), ops.RandomInvert(p=0.5),
    ops.RandomPosterize(bits=3, p=1.0), ops.RandomAdjustSharpness(sharpness_factor=2.0, p=1.0),
    ops.Normalize(),
]


QUANTIZING = (ops.RandomEqualize, ops.RandomPosterize)  # fewer levels is what they do (equalize: on 8 bits)


def _id(value):
    return type(value).__name__ if isinstance(value, ops.Op) else None


@pytest.mark.parametrize("op", BUILTIN, ids=_id)
@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_every_op_keeps_channels_and_pixel_type(op, kind):
    image = IMAGES[kind]
    out = op.numpy(image, np.random.default_rng(3))
    assert out.ndim == 3 and out.shape[2] == image.shape[2]
    expected = np.float32 if isinstance(op, ops.Normalize) else image.dtype
    assert out.dtype == expected
    if kind == "gray16" and not isinstance(op, QUANTIZING):  # no silent truncation to 8 bits
        assert len(np.unique(out)) > 256


@pytest.mark.parametrize("op", BUILTIN, ids=_id)
def test_same_seed_same_output(op):
    image = IMAGES["six16"]
    a = op.numpy(image, np.random.default_rng([1, 2, 3]))
    b = op.numpy(image, np.random.default_rng([1, 2, 3]))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("op", [o for o in BUILTIN if o.draw(np.random.default_rng(0), 48, 56) is not None], ids=_id)
def test_draw_then_apply_is_numpy(op):
    image = IMAGES["rgb8"]
    params = op.draw(np.random.default_rng(7), *image.shape[:2])
    assert np.array_equal(op.apply(image, params), op.numpy(image, np.random.default_rng(7)))


@pytest.mark.parametrize("op", [ops.Rotate(max_degrees=(17, 17)), ops.GaussianBlur(sigma=1.2), ops.Resize(size=(30, 20))],
                         ids=_id)
def test_many_channels_equal_channel_by_channel(op):
    image = IMAGES["six16"]
    whole = op.numpy(image, np.random.default_rng(0))
    for c in range(6):
        single = op.numpy(np.ascontiguousarray(image[:, :, c : c + 1]), np.random.default_rng(0))
        assert np.array_equal(whole[:, :, c : c + 1], single), f"channel {c}"


@pytest.mark.parametrize("channels,groups", [(2, [1, 1]), (3, [3]), (5, [4, 4]), (6, [4, 4]), (9, [4, 4, 4])])
def test_channel_chunks_avoid_two_channel_groups(channels, groups):
    """OpenCV's warpAffine is wrong on 2 channels: wider stacks go in overlapping groups of 4
    (OpenCV's 4-channel kernels cost about what its 1-channel ones do), each channel kept from
    the first group that holds it, in NumPy's order or strided."""
    seen = []
    image = np.random.default_rng(channels).integers(0, 255, (6, 7, channels), np.uint8)
    for view in (image, image[::-1, 1:], np.asfortranarray(image)):
        seen.clear()
        out = by_channel_chunks(view, lambda chunk: seen.append(chunk.shape[2]) or chunk + 1)
        assert seen == groups and out.dtype == np.uint8
        assert np.array_equal(out, view + 1)


@pytest.mark.parametrize("layout", ["interleaved", "planar", "gray", "six"])
def test_flip_gives_the_flipped_pixels_in_a_layout_numpy_runs_fast_on(layout):
    """A horizontal flip of interleaved channels comes back contiguous (OpenCV's copy: NumPy ran
    ~20x slower on the view); channel planes flip as a view (their rows stay NumPy's inner loop)."""
    rgb = IMAGES["rgb8"]
    image = {"interleaved": rgb, "planar": np.ascontiguousarray(rgb.transpose(2, 0, 1)).transpose(1, 2, 0),
             "gray": IMAGES["gray16"], "six": IMAGES["six16"]}[layout]
    flip = ops.Flip(vertical=True)
    for horizontal, vertical in [(False, False), (True, False), (False, True), (True, True)]:
        out = flip.apply(image, (horizontal, vertical))
        expected = image[:, ::-1] if horizontal else image
        assert np.array_equal(out, expected[::-1] if vertical else expected)
        if horizontal and layout != "planar":
            assert out.flags.c_contiguous
        if layout == "planar":
            assert np.shares_memory(out, image)


def test_the_8_bit_resize_is_torchs_antialiased_bilinear_with_channels_interleaved():
    """Into a channels-last tensor (the kernel's own layout, ~25% sooner than its planar result):
    the same values as ``F.interpolate(antialias=True)``, as a C-contiguous HWC array."""
    import torch

    image = IMAGES["rgb8"][3:40, 5:51]
    out = ops.geometry.resize_image(image, 20, 17)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    expected = torch.nn.functional.interpolate(x, size=(20, 17), mode="bilinear", antialias=True)[0]
    assert out.flags.c_contiguous and out.shape == (20, 17, 3)
    assert np.array_equal(out, expected.permute(1, 2, 0).numpy())


def test_one_normalize_gives_the_right_values_on_images_of_any_width_channels_and_type():
    """Normalize keeps its scaled mean/std for the last shape and type it saw; each new one gets its own."""
    normalize = ops.Normalize()
    for image in (IMAGES["rgb8"], IMAGES["rgb8"][:, 3:], IMAGES["gray16"], IMAGES["rgb8"], IMAGES["six16"]):
        mean, std = ops.normalize.resolve_mean_std(None, None, image.shape[2])
        scale = np.float32(65535 if image.dtype == np.uint16 else 255)
        assert np.array_equal(normalize.apply(image, None), normalized(image, mean * scale, std * scale))
    assert normalize == ops.Normalize() and normalize.to_config() == ops.Normalize().to_config()


def test_rotate_quarter_turn_is_counter_clockwise():
    image = IMAGES["rgb8"][:33, :33]
    out = ops.Rotate(max_degrees=(90, 90)).numpy(image, np.random.default_rng(0))
    assert np.array_equal(out, np.rot90(image))


def test_color_jitter_hue_leaves_gray_alone_and_skips_non_rgb():
    gray_rgb = np.repeat(IMAGES["gray16"], 3, axis=2)
    hue = ops.ColorJitter(hue=(0.3, 0.3), saturation=(2.0, 2.0))
    # DALI's rounded YIQ constants (which the NumPy path shares) move gray by < 0.3% of range
    assert np.abs(hue.numpy(gray_rgb, np.random.default_rng(0)).astype(int) - gray_rgb).max() <= 0.003 * 65535
    six = IMAGES["six16"]
    assert np.array_equal(hue.numpy(six, np.random.default_rng(0)), six)


def test_color_jitter_contrast_keeps_mean_and_brightness_scales():
    image = IMAGES["six_float"]
    out = ops.ColorJitter(contrast=(0.5, 0.5)).numpy(image, np.random.default_rng(0))
    assert out.mean() == pytest.approx(image.mean(), abs=1e-5)
    assert out.std() == pytest.approx(image.std() * 0.5, rel=1e-3)
    brighter = ops.ColorJitter(brightness=(1.5, 1.5)).numpy(image, np.random.default_rng(0))
    np.testing.assert_allclose(brighter, image * 1.5, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
@pytest.mark.parametrize("channels", [1, 3, 6])
def test_color_jitter_is_its_formula_on_every_pixel_type(dtype, channels):
    """OpenCV's one pass (every pixel type a store is read as) gives ``M (c b x + (1 - c) b
    mean(x))`` worked out in float64: within one level for integers (saturated), 1e-6 for floats."""
    from fastload.ops.color import hsv_matrix

    jitter = ops.ColorJitter(0.4, 0.4, 0.4, 0.1)
    top = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    image = (smooth(40, 48, channels, np.float32).reshape(40, 48, channels) * top).astype(dtype)[:, ::-1]
    for seed in range(4):
        params = jitter.as_fed(jitter.draw(np.random.default_rng(seed), 40, 48))
        out = jitter.apply(image, params)
        x = image.astype(np.float64) * params.brightness
        x = x.mean() + params.contrast * (x - x.mean())
        if channels == 3:
            x = x @ hsv_matrix(params.hue * 360.0, params.saturation).astype(np.float64).T
        if dtype != np.float32:
            x = np.clip(np.rint(x), np.iinfo(dtype).min, np.iinfo(dtype).max)
        assert out.dtype == dtype and out.shape == image.shape
        assert np.abs(out - x).max() <= (1e-6 if dtype == np.float32 else 1.0)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_rotate_keeps_sixteen_bit_precision(dtype):
    """16-bit images rotate through float32 (OpenCV's 16-bit warp weighs with 5 bits): the same
    values, rounded, as rotating the float image."""
    y, x = np.mgrid[0:48, 0:48]
    image = ((x * 300 + y * 17) - (9000 if dtype == np.int16 else 0)).astype(dtype)[:, :, None]
    rotate = ops.Rotate(max_degrees=(7.3, 7.3))
    out = rotate.numpy(image, np.random.default_rng(0))
    expected = rotate.apply(image.astype(np.float32), rotate.as_fed(7.3))
    assert out.dtype == dtype and np.array_equal(out, np.rint(expected).astype(dtype))


def test_blur_probability_zero_is_identity():
    image = IMAGES["rgb8"]
    assert np.array_equal(ops.GaussianBlur(p=0.0).numpy(image, np.random.default_rng(0)), image)


@pytest.mark.parametrize("op", [ops.RandomCrop(32, padding=4), ops.RandomCrop(24, padding=(3, 1, 5, 2), fill=9),
                                ops.RandomCrop((60, 20), padding=(0, 2)),
                                ops.RandomCrop(32, padding=4, padding_mode="reflect"),
                                ops.RandomCrop(24, padding=(3, 1, 5, 2), padding_mode="symmetric"),
                                ops.RandomCrop((60, 20), padding=(0, 2), padding_mode="edge"),
                                ops.RandomCrop((56, 20), padding=(0, 2), padding_mode="reflect")],
                         ids=["cifar", "sides", "pad-if-needed", "cifar-reflect", "sides-symmetric", "pad-if-needed-edge",
                              "pad-if-needed-reflect"])
def test_random_crop_is_torchvisions_pad_then_crop(op):
    """The drawn window, cut with its padding, is torchvision's ``pad`` then ``crop`` at the
    drawn top-left of the padded image (pad_if_needed: both sides by what is missing, as there)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    image = smooth(48, 56, 3, np.uint8)
    th, tw = (op.size, op.size) if isinstance(op.size, int) else op.size
    seen = set()
    for seed in range(40):
        params = op.draw(np.random.default_rng(seed), 48, 56)
        top, left, height, width, above, before = params
        assert 0 <= top and top + height <= 48 and 0 <= left and left + width <= 56 and height and width
        sides = list(ops.geometry._sides(op.padding))
        padded_h, padded_w = 48 + sides[1] + sides[3], 56 + sides[0] + sides[2]
        if padded_h < th:  # torchvision's pad_if_needed
            sides[1], sides[3] = sides[1] + th - padded_h, sides[3] + th - padded_h
        if padded_w < tw:
            sides[0], sides[2] = sides[0] + tw - padded_w, sides[2] + tw - padded_w
        x = torch.from_numpy(image).permute(2, 0, 1)
        want = F.crop(F.pad(x, sides, fill=op.fill, padding_mode=op.padding_mode), top - above + sides[1],
                      left - before + sides[0], th, tw)
        got = op.apply(image, params)
        assert got.shape == (th, tw, 3) and np.array_equal(got, want.permute(1, 2, 0).numpy())
        seen.add((above > 0, before > 0))
    assert len(seen) > 1 or th > 48  # windows in the padding and out of it (taller crops: always in it)


def test_mirrored_padding_of_an_image_too_small_for_it_is_an_error_at_its_draw():
    """pad_if_needed pads each side by all the image lacks (torchvision's): a 1-row image reflected
    to 3 rows has no row to mirror; symmetric padding repeats its one row."""
    image = smooth(1, 56, 1, np.uint8)
    with pytest.raises(ValueError, match="mirrors more than the image holds"):
        ops.RandomCrop((3, 20), padding_mode="reflect").draw(np.random.default_rng(0), 1, 56)
    symmetric = ops.RandomCrop((2, 20), padding_mode="symmetric")
    out = symmetric.apply(image, symmetric.draw(np.random.default_rng(0), 1, 56))
    assert out.shape == (2, 20, 1) and np.array_equal(out[0], out[1])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_random_grayscale_is_the_luma_in_every_channel_of_rgb_only(dtype):
    image = smooth(20, 24, 3, dtype)
    gray = ops.RandomGrayscale(p=1.0).numpy(image, np.random.default_rng(0))
    luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert gray.dtype == image.dtype and gray.shape == image.shape
    assert (gray == gray[..., :1]).all()  # one value in all three channels
    step = 1.0 if np.dtype(dtype).kind == "u" else 1e-5  # integers rounded (float32 sums)
    assert np.abs(gray[..., 0] - luma).max() <= step
    assert ops.RandomGrayscale(p=0.0).numpy(image, np.random.default_rng(0)) is image
    six = smooth(20, 24, 6, dtype)
    assert ops.RandomGrayscale(p=1.0).numpy(six, np.random.default_rng(0)) is six


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_random_affine_warps_as_torchvisions_affine(interpolation):
    """The same rotation (clockwise), shift, scale and shear about the centre as torchvision's
    ``affine``: its pixels on a float image (nearest: a point exactly between two pixels rounds up
    in OpenCV, to even in torch, so a few may differ)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from fastload.ops.affine import inverse_matrix

    image = smooth(48, 56, 3, np.float32)
    op = ops.RandomAffine(interpolation=interpolation)
    mode = InterpolationMode.BILINEAR if interpolation == "bilinear" else InterpolationMode.NEAREST
    for angle, shift, scale, shear in [(17, (4, 2), 0.8, (7, -5)), (-30, (-6, 3), 1.15, (0, 0)), (5, (0, 0), 1.0, (-12, 4))]:
        got = op.apply(image, inverse_matrix((55 / 2, 47 / 2), angle, shift, scale, shear))
        want = F.affine(torch.from_numpy(image).permute(2, 0, 1), angle=angle, translate=list(shift), scale=scale,
                        shear=list(shear), interpolation=mode).permute(1, 2, 0).numpy()
        differ = np.abs(got - want) > 1e-5
        assert differ.mean() <= (0.0 if interpolation == "bilinear" else 0.005)


def test_random_affine_shifts_by_whole_pixels_within_its_fractions():
    op = ops.RandomAffine(translate=(0.1, 0.2))
    shifts = set()
    for seed in range(30):
        matrix = op.draw(np.random.default_rng(seed), 48, 56)
        assert np.array_equal(matrix[:, :2], np.eye(2))
        tx, ty = -matrix[:, 2]
        assert tx == int(tx) and ty == int(ty) and abs(tx) <= 6 and abs(ty) <= 10  # rounded, as torchvision
        shifts.add((tx, ty))
    assert len(shifts) > 10
    image = IMAGES["rgb8"]
    shifted = op.apply(image, np.array([[1.0, 0, -3], [0, 1, -2]]))  # right 3, down 2
    assert np.array_equal(shifted[2:, 3:], image[:-2, :-3]) and not shifted[:2].any() and not shifted[:, :3].any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_random_solarize_is_torchvisions_solarize_at_its_fraction_of_full_scale(dtype):
    import torch
    from torchvision.transforms.v2 import functional as F

    image = smooth(20, 24, 3, dtype)
    full = 1.0 if dtype == np.float32 else float(np.iinfo(dtype).max)
    for threshold in (0.5, 0.25, 1.0):
        got = ops.RandomSolarize(threshold=threshold, p=1.0).numpy(image, np.random.default_rng(0))
        want = F.solarize(torch.from_numpy(image).permute(2, 0, 1), threshold * full)
        assert got.dtype == image.dtype and np.array_equal(got, want.permute(1, 2, 0).numpy())
    assert ops.RandomSolarize(p=0.0).numpy(image, np.random.default_rng(0)) is image


def test_color_jitter_with_p_leaves_the_other_samples_alone():
    image = IMAGES["rgb8"]
    jitter = ops.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.5)
    kept = [jitter.numpy(image, np.random.default_rng(seed)) is image for seed in range(40)]
    assert 5 < sum(kept) < 35
    always = ops.ColorJitter(0.4, 0.4, 0.4, 0.1)  # p=1 draws as before p existed
    assert always.draw(np.random.default_rng(3), 8, 8) == ops.ColorJitter(0.4, 0.4, 0.4, 0.1).draw(
        np.random.default_rng(3), 8, 8)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [3, 1])
def test_trivial_augment_wide_is_torchvisions_op_by_op(dtype, channels):
    """Each of the 14 ops at a few strengths against torchvision's TrivialAugmentWide applying the
    same op: equal, but where a source point lies exactly between two pixels (nearest reads round
    up in OpenCV, to even in torch) and where torch's fused multiply-add moves a truncated blend
    by one level."""
    import torch
    from torchvision.transforms import InterpolationMode, v2

    from fastload.ops.autoaugment import AUGMENTATIONS, GEOMETRIC, _strengths, augment

    theirs = v2.TrivialAugmentWide()
    image = smooth(40, 46, channels, dtype)
    if dtype == np.uint8:  # a little grain: histograms with many levels
        grain = np.random.default_rng(0).integers(-30, 30, image.shape)
        image = np.clip(image.astype(int) + grain, 0, 255).astype(np.uint8)
    level = 1.0 if dtype != np.float32 else 1e-6
    for name in AUGMENTATIONS:
        strengths, signed = _strengths(name, 31)
        picks = [0.0] if strengths is None else [float(strengths[i]) for i in (3, 17, 30)]
        for magnitude in picks + ([-picks[1]] if signed else []):
            got = augment(image, name, magnitude)
            want = theirs._apply_image_or_video_transform(torch.from_numpy(image).permute(2, 0, 1), name, magnitude,
                                                          InterpolationMode.NEAREST, theirs._fill)
            diff = np.abs(got.astype(np.float64) - want.permute(1, 2, 0).numpy())
            assert got.dtype == image.dtype and got.shape == image.shape
            if name in GEOMETRIC:
                assert (diff > 0).mean() <= 0.05, (name, magnitude)
            else:
                assert diff.max() <= level, (name, magnitude, diff.max())


def test_trivial_augment_wide_draws_every_op_and_both_signs():
    op = ops.TrivialAugmentWide()
    drawn = [op.draw(np.random.default_rng(seed), 40, 46)[0] for seed in range(400)]
    assert {index for index, _, _ in drawn} == set(range(14))
    assert any(m < 0 for _, m, _ in drawn) and any(m > 0 for _, m, _ in drawn)
    identity = [matrix for index, _, matrix in drawn if index in (0, 6, 13)]
    assert all(np.array_equal(m, [[1, 0, 0], [0, 1, 0]]) for m in identity)  # only geometric ops warp


@pytest.mark.parametrize("bins,magnitude", [(31, 9), (31, 30), (10, 5)])
def test_rand_augment_draws_num_ops_at_torchvisions_strengths(bins, magnitude):
    """Each of the ``num_ops`` ops at RandAugment's own strength for the bin (its space: shifts
    scale with the image), negated half the time where it has a sign; applied in turn."""
    from torchvision.transforms import v2

    from fastload.ops.autoaugment import AUGMENTATIONS

    theirs = v2.RandAugment(num_magnitude_bins=bins, magnitude=magnitude)
    op = ops.RandAugment(num_ops=3, magnitude=magnitude, num_magnitude_bins=bins)
    seen = set()
    for seed in range(60):
        drawn = op.draw(np.random.default_rng(seed), 40, 46)
        assert len(drawn) == 3 and len(op.encode(drawn)) == op.param_count == 51
        for index, value, _ in drawn:
            strengths, signed = theirs._AUGMENTATION_SPACE[AUGMENTATIONS[index]]
            strengths = strengths(bins, 40, 46)
            want = float(strengths[magnitude]) if strengths is not None and strengths.ndim else 0.0
            assert abs(value) == pytest.approx(abs(want), rel=1e-6) and (value >= 0 or signed)
            seen.add((index, value < 0))
    assert len(seen) > 20
    image = IMAGES["rgb8"]
    drawn = op.draw(np.random.default_rng(1), *image.shape[:2])
    one_by_one = image
    for step in drawn:
        one_by_one = ops.TrivialAugmentWide().apply(one_by_one, (step,))
    assert np.array_equal(op.apply(image, drawn), one_by_one)


@pytest.mark.parametrize("policy", ["imagenet", "cifar10", "svhn"])
def test_auto_augment_runs_torchvisions_policies_with_their_probabilities(policy):
    """The sub-policies are torchvision's; each step runs with its probability at its bin's
    strength (RandAugment's space, 10 bins); Invert is torchvision's on 8-bit images."""
    import torch
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as F

    from fastload.ops._policies import POLICIES
    from fastload.ops.autoaugment import OPERATIONS

    theirs = v2.AutoAugment(v2.AutoAugmentPolicy(policy))
    assert [tuple(tuple(step) for step in sub) for sub in theirs._policies] == list(POLICIES[policy])
    op = ops.AutoAugment(policy)
    names = {name for sub in POLICIES[policy] for name, _, _ in sub}
    ran = {OPERATIONS[index] for seed in range(300) for index, _, _ in op.draw(np.random.default_rng(seed), 40, 46)}
    assert ran == names | {"Identity"}  # every step named, and skipped ones as the identity
    image = IMAGES["rgb8"]
    inverted = op.apply(image, ((OPERATIONS.index("Invert"), 0.0, np.eye(2, 3)),) * 2)
    once = F.invert(torch.from_numpy(image).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.array_equal(inverted, image) and np.array_equal(op.apply(image, ((14, 0.0, np.eye(2, 3)),)), once)


@pytest.mark.parametrize("ours,theirs", [
    (ops.RandomEqualize(p=1.0), "equalize"), (ops.RandomAutocontrast(p=1.0), "autocontrast"),
    (ops.RandomInvert(p=1.0), "invert"), (ops.RandomPosterize(bits=3, p=1.0), "posterize"),
    (ops.RandomAdjustSharpness(sharpness_factor=2.0, p=1.0), "adjust_sharpness"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_single_adjustments_are_torchvisions(ours, theirs):
    """torchvision's RandomEqualize & co on 8-bit images (sharpness: a blend, within one level)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    image = np.clip(smooth(40, 46, 3, np.uint8).astype(int) + np.random.default_rng(0).integers(-30, 30, (40, 46, 3)),
                    0, 255).astype(np.uint8)
    args = {"posterize": (3,), "adjust_sharpness": (2.0,)}.get(theirs, ())
    want = getattr(F, theirs)(torch.from_numpy(image).permute(2, 0, 1), *args).permute(1, 2, 0).numpy()
    got = ours.numpy(image, np.random.default_rng(0))
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - want).max() <= (1 if theirs == "adjust_sharpness" else 0)
    assert type(ours)(p=0.0).numpy(image, np.random.default_rng(0)) is image


@dataclass(frozen=True)
class _OneAugmentation(ops.TrivialAugmentWide):
    """TrivialAugmentWide held to one of its ops (its strength still drawn; 14: AutoAugment's Invert)."""

    only: int = 0

    def draw(self, rng, height, width):
        from fastload.ops.autoaugment import _step

        if self.only == 14:  # AutoAugment's Invert
            return (_step("Invert", 0.0, height, width),)
        while True:
            params = super().draw(rng, height, width)
            if params[0][0] == self.only:
                return params


@needs_dali
@pytest.mark.parametrize("index", range(15))
@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_dali_runs_each_trivial_augment_op_as_numpy(kind, index):
    """DALI's lowering runs all the policies' ops on every sample, each left as it is where it is
    not the sample's: the drawn one's pixels, the others' untouched."""
    from dali_helpers import run_dali

    from fastload.ops.base import sample_rng

    op = _OneAugmentation(only=index)
    image = IMAGES[kind]
    batch = [image, image[::-1].copy(), image[:, ::-1].copy()]
    for i, (x, got) in enumerate(zip(batch, run_dali([op], batch, seed=index, device="cpu"))):
        want = op.numpy(x, sample_rng(index, 0, i))
        assert got.shape == want.shape and got.dtype == want.dtype
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        full = 1.0 if x.dtype == np.float32 else float(np.iinfo(x.dtype).max)
        if index in (1, 2, 3, 4, 5):  # nearest reads: a point between two pixels may round either way
            assert (diff > 0).mean() <= 0.01
        elif index == 13:  # DALI's equalize is OpenCV's formula, PIL's (torchvision's) here: a few levels
            assert diff.max() <= 0.1 * full and diff.mean() <= 0.03 * full, (diff.max(), diff.mean())
        else:
            assert diff.max() <= (1.0 if full > 1 else 1e-5), (diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("bad", [
    lambda: ops.ColorJitter(hue=0.7), lambda: ops.ColorJitter(brightness=-1), lambda: ops.Rotate(max_degrees=(10, -10)),
    lambda: ops.GaussianBlur(sigma=0), lambda: ops.GaussianBlur(p=2),
    lambda: ops.RandomCrop(8, padding=8), lambda: ops.RandomCrop(32, padding=(1, 2, 3)),
    lambda: ops.RandomCrop(32, padding=-1), lambda: ops.RandomGrayscale(p=1.5),
    lambda: ops.RandomCrop(32, padding=16, padding_mode="reflect"), lambda: ops.RandomCrop(32, padding_mode="wrap"),
    lambda: ops.RandomAffine(degrees=-1), lambda: ops.RandomAffine(translate=(0.1, 1.5)),
    lambda: ops.RandomAffine(scale=(1.2, 0.8)), lambda: ops.RandomAffine(shear=(1, 2, 3)),
    lambda: ops.RandomAffine(interpolation="bicubic"), lambda: ops.ColorJitter(0.4, p=1.5),
    lambda: ops.RandomSolarize(threshold=128), lambda: ops.RandomSolarize(p=-0.1),
    lambda: ops.TrivialAugmentWide(num_magnitude_bins=1), lambda: ops.RandAugment(num_ops=0),
    lambda: ops.RandAugment(magnitude=31), lambda: ops.AutoAugment("imagenet2012"),
    lambda: ops.RandomEqualize(p=2), lambda: ops.RandomPosterize(bits=9), lambda: ops.RandomAdjustSharpness(-1),
])
def test_bad_settings_fail_at_construction(bad):
    with pytest.raises(ValueError):
        bad()


# --- DALI: the op matrix ---------------------------------------------------------------------------
# Every built-in op x pixel type / channel count x device: the DALI lowering, fed the parameters
# the Loader's feed draws, against the NumPy implementation given the same per-sample generator.
DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]
RESAMPLING = (ops.RandomResizedCrop, ops.Resize)  # cv2 INTER_AREA vs DALI's antialiased filter


def _tolerance(op: ops.Op, dtype: np.dtype) -> tuple[float, float]:
    """(max, mean) absolute difference allowed, in the pixel type's units."""
    full = 255.0 if dtype == np.uint8 else (65535.0 if dtype == np.uint16 else 1.0)
    if isinstance(op, ops.Normalize):
        return 1e-4, 1e-5
    if isinstance(op, RESAMPLING):
        return 0.25 * full, 0.02 * full
    # one step of uint8; 1e-4 of range otherwise (where a rotated edge meets the fill, the two
    # libraries' bilinear weights differ in the last digits)
    # (rounding to uint8 after float colour maps: a quarter of the pixels may differ by one)
    return (1.0, 0.25) if dtype == np.uint8 else (1e-4 * full, 1e-5 * full)


@needs_dali
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", BUILTIN, ids=_id)
@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_dali_agrees_with_numpy_for_every_op(op, kind, device):
    from dali_helpers import run_dali

    from fastload.ops.base import sample_rng

    image = IMAGES[kind]
    batch = [image, image[::-1].copy()]
    outs = run_dali([op], batch, seed=5, device=device)
    for i, (x, got) in enumerate(zip(batch, outs)):
        want = op.numpy(x, sample_rng(5, 0, i))
        assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype)
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        worst, mean = _tolerance(op, x.dtype)
        if getattr(op, "interpolation", None) == "nearest":
            # a source point a hair from a pixel's edge rounds either way (DALI's float32, OpenCV's fixed point)
            assert (diff > worst).mean() <= 0.005, (diff > worst).mean()
            continue
        assert diff.max() <= worst and diff.mean() <= mean, (diff.max(), diff.mean())
    if kind == "gray16" and not isinstance(op, (ops.Normalize, *QUANTIZING)):
        assert len(np.unique(outs[0])) > 256  # 16 bits survive
    assert np.array_equal(outs, run_dali([op], batch, seed=5, device=device))  # seeded: replays


# --- through the Loader --------------------------------------------------------------------------
class SixChannelStore:
    """An in-memory store of 6-channel uint16 images (the packer takes 1- and 3-channel files only)."""

    def __init__(self, count: int = 8) -> None:
        self.images = [smooth(40 + i, 48, 6, np.uint16, seed=i) for i in range(count)]
        self.labels = np.arange(count, dtype=np.int64) % 2
        self.path = "memory://six-channel"
        self.channels = 6
        self.classes = ["a", "b"]
        self.header = type("Header", (), {"dtypes": ["uint16"], "stats": {}, "channels": 6})()

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int, verify: bool = True) -> bytes:
        return self.images[index].tobytes()

    def decode(self, index: int, window: tuple[int, int, int, int] | None = None, *, verify: bool = True) -> np.ndarray:
        if window is None:
            return self.images[index]
        top, left, height, width = window
        return self.images[index][top : top + height, left : left + width]

    def record_shapes(self) -> np.ndarray:
        return np.array([image.shape for image in self.images], np.int64)


def test_loader_yields_16_bit_precision_after_augmentation(tmp_path):
    import fastload
    from fastload.sample import SampleSpec, make_sample_folder

    make_sample_folder(tmp_path / "xray", SampleSpec(num_classes=2, per_class=2, short_side=(40, 48),
                                                     image_format="png16"), workers=1)
    store = str(tmp_path / "xray.lmdb")
    fastload.pack(str(tmp_path / "xray"), store, options=fastload.PackOptions(workers=1, progress=False))
    augment = [ops.RandomResizedCrop(32, scale=(0.5, 1.0)), ops.Flip(), ops.Rotate(10),
               ops.ColorJitter(brightness=0.1, contrast=0.1), ops.GaussianBlur(sigma=(0.3, 0.6)), ops.Normalize()]
    loader = fastload.Loader(store, batch_size=4, augment=augment, backend="torch", device="cpu", num_threads=0)
    images, _ = next(iter(loader))
    assert images.shape == (4, 1, 32, 32)
    for image in images:
        assert len(np.unique(image.numpy())) > 256


@pytest.mark.parametrize("op", BUILTIN, ids=_id)
def test_loader_yields_six_channel_batches_through_every_op(op):
    import fastload

    augment = [op, ops.CenterCrop(32)] if not isinstance(op, ops.Normalize) else [ops.CenterCrop(32), op]
    loader = fastload.Loader(SixChannelStore(), batch_size=4, augment=augment, backend="torch",
                             device="cpu", num_threads=0)
    images, labels = next(iter(loader))
    assert images.shape == (4, 6, 32, 32) and labels.shape == (4,)
