"""Image folders: an ImageFolder tree (one sub-folder per class) or a flat, unlabelled folder."""

from __future__ import annotations

import os

from .base import Skipped, Source, SourceItem, display_path

__all__ = ["scan_folder", "walk_files"]


def _sort_key(name: str) -> bytes:
    # Byte order, so names that are not valid UTF-8 sort the same on every machine.
    return os.fsencode(name)


def walk_files(root: str, skipped: list[Skipped]) -> list[str]:
    """Every regular file under ``root`` in sorted order, following symlinks safely.

    Hidden entries (names starting with '.') are ignored. Dangling and looping symlinks are
    reported in ``skipped`` instead of raising.
    """
    found: list[str] = []
    _walk(root, found, {os.path.realpath(root)}, skipped)
    return found


def _walk(directory: str, found: list[str], seen: set[str], skipped: list[Skipped]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: _sort_key(e.name))
    except OSError as exc:
        skipped.append(Skipped(directory, f"cannot list folder: {exc.strerror}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        subdir = _classify(entry, found, seen, skipped)
        if subdir is not None:
            _walk(subdir, found, seen, skipped)


def _classify(entry: os.DirEntry, found: list[str], seen: set[str], skipped: list[Skipped]) -> str | None:
    """Record a file in ``found`` or a problem in ``skipped``; return a folder to descend into."""
    try:
        if entry.is_dir(follow_symlinks=True):
            real = os.path.realpath(entry.path)
            if real in seen:
                skipped.append(Skipped(entry.path, "symlink loop: folder already visited"))
                return None
            seen.add(real)
            return entry.path
        if entry.is_file(follow_symlinks=True):
            found.append(entry.path)
        elif entry.is_symlink():
            skipped.append(Skipped(entry.path, "dangling symlink: its target does not exist"))
        else:
            skipped.append(Skipped(entry.path, "not a regular file"))
    except OSError as exc:  # ELOOP on a symlink pointing at itself, EACCES, ...
        skipped.append(Skipped(entry.path, f"cannot stat: {exc.strerror or exc}"))
    return None


def scan_folder(root: str) -> Source:
    """List an image folder.

    If ``root`` has sub-folders, each is a class (sorted by name, labels 0..n-1) and every
    file beneath it, at any depth, is a sample of that class; files directly in ``root`` are
    skipped. A folder without sub-folders is unlabelled: every file gets label -1.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a folder; pass a folder of images (or --labels CSV)")
    skipped: list[Skipped] = []
    classes = sorted(
        (e.name for e in os.scandir(root) if not e.name.startswith(".") and _is_dir(e)),
        key=_sort_key,
    )
    if not classes:
        files = walk_files(root, skipped)
        return Source(root, [SourceItem(p, -1) for p in files], [], skipped, "folder")
    items: list[SourceItem] = []
    for entry in sorted(os.scandir(root), key=lambda e: _sort_key(e.name)):
        if not entry.name.startswith(".") and not _is_dir(entry) and _is_file(entry):
            skipped.append(Skipped(entry.path, "file outside any class folder"))
    for label, name in enumerate(classes):
        for path in walk_files(os.path.join(root, name), skipped):
            items.append(SourceItem(path, label))
    return Source(root, items, [display_path(c) for c in classes], skipped, "folder")


def _is_dir(entry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _is_file(entry) -> bool:
    try:
        return entry.is_file(follow_symlinks=True)
    except OSError:
        return False
