"""fastload: fast image data loading for PyTorch training.

Pack a folder of images into one LMDB or HDF5 store, then read it with DALI (GPU or CPU) or a
pure-PyTorch backend through a drop-in replacement for ``torch.utils.data.DataLoader``.
"""

from . import stats
from ._version import __version__
from .codecs.dicom import DicomOptions
from .errors import (
    BadInputError,
    CorruptRecordError,
    CorruptStoreError,
    FastloadError,
    FoldsError,
    MissingExtraError,
    PackError,
    SampleShapeError,
    StoreExistsError,
    StoreFormatError,
    WorkerDiedError,
    WorkerError,
)
from .loss_sampling import LossSampling
from .ops.custom import array_namespace, batch_op, op
from .pack import PackOptions, PackSummary, pack
from .sample import SampleSpec, make_sample_folder
from .sources import CsvColumns
from .splits import FoldBalance, Folds, folds, load_folds
from .stores import ShardedStore, StoreReader, open_store

__all__ = [
    "BadInputError",
    "CorruptRecordError",
    "CorruptStoreError",
    "CsvColumns",
    "DicomOptions",
    "FastloadError",
    "FoldBalance",
    "Folds",
    "FoldsError",
    "Loader",
    "LossSampling",
    "MissingExtraError",
    "PackError",
    "PackOptions",
    "PackSummary",
    "SampleShapeError",
    "SampleSpec",
    "ShardedStore",
    "StoreExistsError",
    "StoreFormatError",
    "StoreReader",
    "WorkerDiedError",
    "WorkerError",
    "__version__",
    "array_namespace",
    "batch_op",
    "folds",
    "load_folds",
    "make_sample_folder",
    "op",
    "open_store",
    "pack",
    "stats",
]


def __getattr__(name: str):
    # The Loader imports torch (~2 s): `fastload pack`, `inspect` and every pack worker
    # process import this package and must not pay for it, so it is imported on first use.
    if name == "Loader":
        from .loader import Loader

        return Loader
    raise AttributeError(f"module 'fastload' has no attribute {name!r}")
