"""JSON and YAML config files (op lists, batch transforms): one reader and one writer for both.

The suffix decides the format: ``.json``, or ``.yaml``/``.yml`` (parsed with ``yaml.safe_load``,
which builds plain lists and mappings, never objects).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_SUFFIXES", "is_config_path", "load_config_file", "save_config_file"]

YAML_SUFFIXES = (".yaml", ".yml")
CONFIG_SUFFIXES = (".json", *YAML_SUFFIXES)


def is_config_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` names a config file by its suffix."""
    return os.fspath(path).lower().endswith(CONFIG_SUFFIXES)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"{path}: configs are .json, .yaml or .yml files; name the file with one of those")
    return suffix


def load_config_file(path: str | os.PathLike[str]) -> Any:
    """Parse a ``.json``/``.yaml``/``.yml`` file."""
    path = Path(path)
    suffix = _suffix(path)
    text = path.read_text(encoding="utf-8")
    if suffix in YAML_SUFFIXES:
        import yaml  # a dependency, imported here so that `import fastload` does not pay for it

        return yaml.safe_load(text)
    return json.loads(text)


def save_config_file(entries: Any, path: str | os.PathLike[str]) -> None:
    """Write plain lists/mappings to ``path`` (.json, or .yaml/.yml), in the order given."""
    path = Path(path)
    if _suffix(path) in YAML_SUFFIXES:
        import yaml

        text = yaml.safe_dump(entries, sort_keys=False)
    else:
        text = json.dumps(entries, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
