"""The ``fastload`` command: a thin layer that parses, calls the library, and prints.

The parser's texts are what a user reads first: every command has a one-line description and
examples, every option a help text (tests/test_cli.py checks both).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .codecs.dicom import DICOM_PAYLOADS, FRAMES, DicomOptions
from .codecs.images import DEFAULT_MAX_PIXELS
from .errors import CorruptStoreError, FastloadError
from .inspect import inspect_path, verify_path
from .pack import PackOptions, pack
from .sample import SampleSpec, make_sample_folder
from .sources import CsvColumns
from .stores import FORMATS

__all__ = ["main", "build_parser"]

DESCRIPTION = ("Pack image folders into LMDB or HDF5 stores for fast PyTorch training, and inspect, "
               "verify, split and tune them for fastload.Loader.")
EXAMPLES = """examples:
  fastload sample data                           write 400 ImageNet-like JPEGs to try things on
  fastload pack --format lmdb data               pack a folder of class folders into data.lmdb
  fastload inspect data.lmdb                     counts, classes, sizes, skipped inputs
  fastload verify data.lmdb                      check every record's checksum
  fastload tune data.lmdb                        the fastest Loader settings on this machine

'fastload COMMAND --help' gives each command's options and examples."""


def _command(sub: argparse._SubParsersAction, name: str, summary: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand with its one-line description and its examples."""
    return sub.add_parser(name, help=summary, description=summary, epilog="examples:\n" + examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_pack(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "pack", "Pack an image folder (class sub-folders, or any folder with a CSV of labels) "
                 "into one LMDB or HDF5 store; bad files are skipped and listed.",
                 "  fastload pack --format lmdb data                  # data/CLASS/*.jpg -> data.lmdb\n"
                 "  fastload pack images --labels train.csv -o train.h5 --format hdf5\n"
                 "  fastload pack data --store raw -o data-raw.lmdb   # decoded pixels: no decode when training\n"
                 "  fastload pack data --shard-size 50000             # data-00000-of-0000N.lmdb, ...")
    p.add_argument("source", help="image folder: class sub-folders, or any folder with --labels")
    p.add_argument("--format", choices=sorted(FORMATS), default="lmdb", help="store format (default lmdb)")
    p.add_argument("-o", "--output", help="store path (default: SOURCE + .lmdb/.h5 beside it)")
    p.add_argument("--labels", help="CSV with a path column and a label column (Kaggle style)")
    p.add_argument("--path-column", help="CSV column holding file names (default: detected)")
    p.add_argument("--label-column", help="CSV column holding labels (default: detected)")
    _add_channel_columns(p)
    p.add_argument("--store", dest="payload", choices=["encoded", "raw"], default="encoded",
                   help="encoded: original file bytes (default); raw: decoded arrays")
    p.add_argument("--max-side", type=int, help="re-encode images whose longer side exceeds this")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality when re-encoding")
    p.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    p.add_argument("--strict", action="store_true", help="fail on the first bad input")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images whose header claims more pixels")
    p.add_argument("--shard-size", type=int, help="inputs per shard (writes NAME-00000-of-0000N.EXT)")
    p.add_argument("--num-shards", type=int, help="total shards, with --shard-index")
    p.add_argument("--shard-index", type=int, help="write only this shard (parallel packing)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_dicom(p)


def _add_dicom(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DICOM", "how DICOM files are packed (see the README's DICOM policy)")
    g.add_argument("--dicom-frames", choices=FRAMES, default="first",
                   help="multi-frame files: the first frame (default) or one record per frame")
    g.add_argument("--dicom-window", nargs="?", const="file", default=None, type=_dicom_window,
                   metavar="file|CENTER,WIDTH",
                   help="apply windowing, giving uint8 0..255: the file's own VOI (the default when "
                        "given alone) or CENTER,WIDTH (e.g. 40,400); without it values are kept "
                        "and the file's window is recorded per record")
    g.add_argument("--dicom-payload", choices=DICOM_PAYLOADS, default="pixels",
                   help="pixels: the policy's result, lossless (default); codestream: keep JPEG 2000 "
                        "codestreams as they are (for GPU decoding), the policy beside them")


def _dicom_window(text: str) -> str | tuple[float, float] | None:
    if text.strip().lower() in ("none", "off"):
        return None
    if text.strip().lower() == "file":
        return "file"
    try:
        center, width = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'file', 'none' or CENTER,WIDTH, got {text!r}") from None
    return center, width


def _add_channel_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel-columns", type=_name_list, metavar="COL1,COL2,...",
                   help="CSV columns naming one single-channel file each, stacked in this order "
                        "into one multi-channel sample (default: columns named ch1, ch2, ...)")


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    return names


def _run_pack(args: argparse.Namespace) -> int:
    options = PackOptions(
        format=args.format, payload=args.payload, max_side=args.max_side, quality=args.quality,
        workers=args.workers, strict=args.strict, overwrite=args.overwrite,
        max_pixels=args.max_pixels, shard_size=args.shard_size, num_shards=args.num_shards,
        shard_index=args.shard_index, progress=not args.quiet,
        dicom=DicomOptions(frames=args.dicom_frames, window=args.dicom_window,
                           payload=args.dicom_payload),
    )
    summary = pack(args.source, args.output, labels=args.labels,
                   columns=CsvColumns(args.path_column, args.label_column, args.channel_columns),
                   options=options)
    print(summary)
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "inspect", "Show a store's or an image folder's counts, classes, sizes, channels, "
                 "encodings and skipped inputs.",
                 "  fastload inspect data.lmdb\n"
                 "  fastload inspect images --labels train.csv      # a folder before packing\n"
                 "  fastload inspect data.lmdb --json > profile.json")
    p.add_argument("path", help="a store (.lmdb, .h5, a glob of shards) or an image folder")
    p.add_argument("--labels", help="CSV manifest, when PATH is a folder")
    _add_channel_columns(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--workers", type=int, help="worker processes for a raw folder")


PAYLOAD_WORDS = {"encoded": "each file's original bytes", "raw": "decoded pixel arrays",
                 "files": "files not yet packed"}


def _counts(histogram: dict, unit: str = "images") -> str:
    """{'3': 380, '1': 20} -> '3 (380 images), 1 (20)'."""
    parts = [f"{value} ({count}{' ' + unit if i == 0 else ''})"
             for i, (value, count) in enumerate(sorted(histogram.items(), key=lambda kv: -kv[1]))]
    return ", ".join(parts) or "-"


def _print_profile(profile: dict) -> None:
    held = PAYLOAD_WORDS.get(profile["payload"], profile["payload"])
    print(f"{profile['path']}: {profile['count']} images; the records hold {held}")
    print(f"  classes: {profile['classes']}, imbalance (largest/smallest): {profile['imbalance']}")
    for name, count in list(profile["per_class"].items())[:50]:
        print(f"    {name}: {count}")
    if profile["unlabelled"]:
        print(f"  unlabelled: {profile['unlabelled']}")
    b = profile["bytes"]
    if b.get("total") is not None and profile["count"]:
        print(f"  bytes: {b['total'] / 1e6:.1f} MB total, median {b['median'] / 1e3:.1f} KB per image")
    for key in ("height", "width"):
        s = profile[key]
        if s:
            print(f"  {key}: min {s['min']:.0f}, median {s['median']:.0f}, max {s['max']:.0f}")
    print(f"  channels: {_counts(profile['channels'])}")
    print(f"  pixel type: {_counts(profile['dtype'])}")
    print(f"  file type: {_counts(profile['encoding'])}")
    if profile["mean"] is not None:
        mean, std = (", ".join(f"{v:.3f}" for v in profile[k]) for k in ("mean", "std"))
        print(f"  per channel (0..1 units): mean {mean}; std {std}")
    _print_metadata(profile.get("metadata") or [])
    print(f"  skipped inputs: {profile['skipped']}")


def _print_metadata(columns: list[dict]) -> None:
    if columns:
        print(f"  metadata columns: {len(columns)}")
    for c in columns:
        facts = [c["kind"], f"{c['distinct']} distinct"]
        if "min" in c:
            facts.append(f"{c['min']}..{c['max']}")
        if c.get("missing"):
            facts.append(f"{c['missing']} missing")
        if c.get("examples"):
            facts.append("e.g. " + ", ".join(e[:30] for e in c["examples"]))
        if "true" in c:
            facts.append(f"{c['true']} true")
        print(f"    {c['name']}: {', '.join(facts)}")


def _run_inspect(args: argparse.Namespace) -> int:
    profile = inspect_path(args.path, args.labels, workers=args.workers, progress=not args.json,
                           columns=CsvColumns(channels=args.channel_columns))
    if args.json:
        json.dump(profile, sys.stdout, indent=1)
        print()
    else:
        _print_profile(profile)
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "verify", "Check a store's structure and every record's checksum; exit 1 listing "
                 "every problem.",
                 "  fastload verify data.lmdb\n"
                 "  fastload verify 'train-*-of-*.lmdb' --decode   # every shard, every image decoded")
    p.add_argument("path", help="a store (.lmdb, .h5) or a glob of shards")
    p.add_argument("--decode", action="store_true", help="also decode every record")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _run_verify(args: argparse.Namespace) -> int:
    count, bad = verify_path(args.path, decode=args.decode, progress=not args.quiet)
    if bad:
        for problem in bad:
            print(problem, file=sys.stderr)
        records = sum(problem.index is not None for problem in bad)
        whole = len(bad) - records
        if count is None:
            print("the store cannot be opened, so its records cannot be checked", file=sys.stderr)
        else:
            problems = f"; {whole} problem{'s' if whole > 1 else ''} with the store as a whole" if whole else ""
            print(f"{records} of {count} records are bad{problems}", file=sys.stderr)
        print("re-copy the store from its source, or re-pack it", file=sys.stderr)
        return 1
    print(f"{args.path}: all {count} records verified")
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "sample", "Write a folder of ImageNet-like sample images in class folders "
                 "(generated here: no download).",
                 "  fastload sample data                              # 10 classes x 40 JPEGs\n"
                 "  fastload sample xrays --image-format png16 --classes 2")
    p.add_argument("folder", help="where the class folders go")
    p.add_argument("--classes", type=int, default=10, help="number of class folders (default 10)")
    p.add_argument("--per-class", type=int, default=40, help="images per class (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images (default 0)")
    p.add_argument("--image-format", choices=["jpeg", "png", "png16"], default="jpeg",
                   help="jpeg (default), png, or png16: 16-bit grayscale like X-rays")


def _run_sample(args: argparse.Namespace) -> int:
    spec = SampleSpec(num_classes=args.classes, per_class=args.per_class, seed=args.seed,
                      image_format=args.image_format)
    paths = make_sample_folder(args.folder, spec)
    print(f"wrote {len(paths)} images in {args.classes} class folders under {args.folder}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_tune(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "tune", "Find the fastest fastload.Loader threads, batch size, prefetch (and "
                 "GPU decoder split) for a store on this machine.",
                 "  fastload tune data.lmdb --save tuned.json\n"
                 "  fastload tune data.lmdb --batch-sizes 256      # keep your batch size\n"
                 "  fastload tune data.lmdb --model resnet50       # on a GPU, with the model in the loop")
    p.add_argument("store", help="a store (.lmdb, .h5) or a glob of shards")
    p.add_argument("--threads", type=_int_list, help="thread counts to try (e.g. 1,2,4,8)")
    p.add_argument("--batch-sizes", type=_int_list,
                   help="batch sizes to try (batch size changes training: give yours to keep it)")
    p.add_argument("--prefetch", type=_int_list, help="prefetch depths to try (default 1,2,4)")
    p.add_argument("--hw-decoder-loads", type=_float_list, metavar="LOADS",
                   help="GPU only: hw_decoder_load values to try, 0..1 (default "
                        "0,0.3,0.5,0.65,0.8,0.9,1); skipped when the Loader runs on the CPU")
    p.add_argument("--host-workers", type=_int_list, metavar="COUNTS",
                   help="CPU with DALI: host stage processes to try besides threads (default: the best "
                        "thread count); skipped when the ops run on the GPU")
    p.add_argument("--model", help="a torchvision model (e.g. resnet18) trained on every batch: "
                                   "tune for training images/s, not the loader alone")
    p.add_argument("--backend", default="auto", choices=["auto", "dali", "torch"],
                   help="the Loader's backend (default: DALI where installed, else torch)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the batches go (default: the GPU when there is one)")
    p.add_argument("--image-size", type=int, default=224, help="output side of the train preset (default 224)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per setting (median kept)")
    p.add_argument("--images-per-round", type=int, default=640, help="images per timed round")
    p.add_argument("--save", metavar="FILE", help="write the winning settings and every trial as JSON")


def _run_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    loop = f", training {args.model} on every batch" if args.model else ""
    print(f"tuning the Loader on {args.store} (each setting: warm-up, then {args.rounds} timed "
          f"rounds{loop})")
    result = tune(args.store, threads=args.threads, batch_sizes=args.batch_sizes,
                  prefetch=args.prefetch, hw_decoder_loads=args.hw_decoder_loads,
                  host_workers=args.host_workers, model=args.model, rounds=args.rounds,
                  images_per_round=args.images_per_round,
                  backend=args.backend,
                  device=args.device, image_size=args.image_size,
                  progress=lambda trial: print(f"  {trial}", flush=True))
    print()
    print(result.table())
    for note in result.notes:
        print(note)
    print(result.summary())
    print(result.loader_call(args.store))
    if args.save:
        with open(args.save, "w") as f:
            json.dump(result.to_json(), f, indent=1)
        print(f"wrote {args.save}")
    return 0


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "split", "Make cross-validation folds of a store (stratified, grouped by a "
                 "metadata column), as JSON.",
                 "  fastload split data.lmdb --folds 5 -o folds.json\n"
                 "  fastload split scans.lmdb --groups patient_id -o folds.json")
    p.add_argument("store", help="a store (.lmdb, .h5) or a glob of shards")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--stratify", action=argparse.BooleanOptionalAction, default=True,
                   help="keep each class's share in every fold (default; --no-stratify for unlabelled stores)")
    p.add_argument("--groups", metavar="COLUMN",
                   help="metadata column whose groups never share folds (e.g. patient_id)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle before splitting (default 0)")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                   help="shuffle before splitting (default)")
    p.add_argument("-o", "--output", help="write the folds here as JSON (default: only print)")


def _run_split(args: argparse.Namespace) -> int:
    from .splits import folds

    made = folds(args.store, args.folds, stratify=args.stratify, groups=args.groups,
                 seed=args.seed, shuffle=args.shuffle)
    how = [w for w, on in (("stratified", args.stratify), (f"grouped by {args.groups}", args.groups),
                           ("shuffled", args.shuffle)) if on]
    print(f"{made.k} folds of {args.store} ({', '.join(how) or 'in order'}, seed {args.seed}): "
          f"{len(made.val_fold)} records")
    print(made.balance)
    if args.output:
        print(f"wrote {made.save(args.output)}")
    return 0


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "audit", "Rank a store's records by how persistently their training loss stays high "
                 "(likely mislabels), from a saved loss history, as CSV with paths and labels.",
                 "  fastload audit losses.npz -o audit.csv          # from loader.save_loss_history('losses.npz')\n"
                 "  fastload audit losses.npz --top 100 --store /data/train.lmdb   # the store moved")
    p.add_argument("history", help="a loss history written by loader.save_loss_history(path)")
    p.add_argument("-o", "--output", default="audit.csv", help="CSV to write (default audit.csv)")
    p.add_argument("--store", help="the store the losses were recorded on (default: the path saved in the history)")
    p.add_argument("--top", type=int, help="write only the TOP highest-ranked records")


def _run_audit(args: argparse.Namespace) -> int:
    from .audit import audit_history_file

    rows = audit_history_file(args.history, args.output, store=args.store, top=args.top)
    print(f"wrote {args.output}: {rows} records ranked by persistent loss (highest first)")
    return 0


_COMMANDS = {"pack": _run_pack, "inspect": _run_inspect, "verify": _run_verify, "sample": _run_sample,
             "tune": _run_tune, "split": _run_split, "audit": _run_audit}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastload", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastload {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_pack, _add_inspect, _add_verify, _add_sample, _add_tune, _add_split, _add_audit):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except CorruptStoreError as exc:  # damage found: 1, as verify's own findings
        print(f"fastload {args.command}: {exc}", file=sys.stderr)
        return 1
    except (FastloadError, FileNotFoundError, ValueError) as exc:
        print(f"fastload {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
