"""Shared fixtures: every test makes its own images in temporary folders (no downloads)."""

from __future__ import annotations

import pytest

import fastload
from fastload.sample import SampleSpec, make_sample_folder


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    cuda = _has_cuda()
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory) -> str:
    """3 classes x 8 natural-image-like JPEGs, short side 48-80 px (fast to decode)."""
    root = tmp_path_factory.mktemp("small") / "data"
    make_sample_folder(root, SampleSpec(num_classes=3, per_class=8, short_side=(48, 80)), workers=1)
    return str(root)


@pytest.fixture(scope="session")
def small_lmdb(small_folder, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("stores") / "small.lmdb")
    fastload.pack(small_folder, out, options=fastload.PackOptions(workers=1, progress=False))
    return out


@pytest.fixture(scope="session")
def small_h5(small_folder, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("stores") / "small.h5")
    fastload.pack(small_folder, out, options=fastload.PackOptions(format="hdf5", workers=1, progress=False))
    return out
