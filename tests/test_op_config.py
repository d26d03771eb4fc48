"""Op lists to JSON/YAML and back: equal specs, equal outputs for the same seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import fastload
from fastload import ops


@fastload.op
def add_noise(x, rng, sigma=0.05):
    xp = fastload.array_namespace(x)
    return x + sigma * xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)


@fastload.batch_op
def identity_batch(images):
    return images


PIPELINE = [
    ops.RandomResizedCrop(24), ops.Flip(horizontal=True, vertical=True), ops.Rotate(max_degrees=15),
    ops.ColorJitter(brightness=0.2, contrast=(0.8, 1.1)), ops.GaussianBlur(sigma=(0.2, 1.0), p=0.5),
    ops.RandomErasing(p=0.5, value="random"), ops.GaussianNoise(0.01), ops.HistogramEqualization(),
    ops.ChannelIntensityScale(), add_noise.with_args(sigma=0.02), identity_batch,
    ops.RandomAffine(degrees=(-5, 10), translate=(0.1, 0.1), scale=(0.9, 1.1), shear=(1, 2, 3, 4)),
    ops.RandomCrop(20, padding=(2, 1), padding_mode="reflect"), ops.ColorJitter(0.1, p=0.5),
    ops.RandomSolarize(threshold=0.6, p=0.5), ops.TrivialAugmentWide(), ops.RandAugment(num_ops=1, magnitude=5),
    ops.Normalize(mean=(0.5,), std=(0.25,)),
]


def run(op_list, image, seed):
    rng = np.random.default_rng(seed)
    for spec in op_list:
        image = spec.numpy(image, rng)
    return image


def test_round_trip_gives_equal_ops_and_equal_outputs():
    again = ops.from_config(ops.to_config(PIPELINE))
    assert again == PIPELINE
    image = np.random.default_rng(0).random((40, 48, 6), dtype=np.float32)
    assert np.array_equal(run(PIPELINE, image, [0, 1, 2]), run(again, image, [0, 1, 2]))


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_save_and_load_files(tmp_path, suffix):
    path = tmp_path / f"aug{suffix}"
    ops.save_config(PIPELINE, path)
    assert ops.from_config(path) == PIPELINE
    assert ops.from_config(str(path)) == PIPELINE


def test_config_is_plain_and_readable():
    entries = ops.to_config(PIPELINE)
    json.dumps(entries)  # only plain types
    assert entries[6] == {"op": "GaussianNoise", "p": 1.0, "sigma": 0.01}
    assert entries[9] == {"op": "custom", "function": f"{__name__}:add_noise", "args": {"sigma": 0.02}}
    assert entries[10]["op"] == "batch_custom"


def test_hand_written_yaml(tmp_path):
    path = tmp_path / "aug.yaml"
    path.write_text(yaml.safe_dump({"augment": [
        {"op": "Rotate", "max_degrees": [-5, 5]},
        {"op": "custom", "function": f"{__name__}:add_noise", "args": {"sigma": 0.3}},
        {"op": "HistogramEqualization"},
    ]}))
    assert ops.from_config(path) == [ops.Rotate(max_degrees=(-5, 5)), add_noise.with_args(sigma=0.3),
                                     ops.HistogramEqualization()]


@pytest.mark.parametrize("entry, message", [
    ({"op": "Sharpen"}, "unknown op 'Sharpen'"),
    ({"op": "Rotate", "degrees": 3}, r"entry 0 \(Rotate\).*degrees"),
    ({"op": "ColorJitter", "hue": 0.9}, "hue"),
    ({"op": "custom", "function": "no_such_module_xyz:f"}, "cannot import"),
    ({"op": "custom"}, "function"),
    ({"flip": True}, "'op' key"),
])
def test_bad_entries_say_what_is_wrong(entry, message):
    with pytest.raises((ValueError, fastload.ops.CustomOpError), match=message):
        ops.from_config([entry])


def test_local_functions_cannot_be_saved():
    @fastload.op
    def local(x):
        return x

    with pytest.raises(ValueError, match="module level"):
        ops.to_config([local])
