"""Packages imported when first needed, with one error that says what to install.

Heavy or optional packages (DALI, CuPy, scikit-learn, torchvision, ...) are imported at the point
of use, not with fastload: ``fastload pack`` and its worker processes must not pay for DALI, and a
CPU-only install must import without it. Every such import goes through ``require`` so that a
missing one always gives a MissingExtraError naming the pip extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["available", "require"]


def require(module: str, extra: str | None, purpose: str, *, package: str | None = None) -> ModuleType:
    """Import ``module``, or raise MissingExtraError saying how to install it.

    Args:
        module: the import name, e.g. "nvidia.dali" or "sklearn.model_selection".
        extra: the fastload pip extra that installs it (a key of pyproject.toml's
            ``[project.optional-dependencies]``, e.g. "cuda13"), or None for one of fastload's
            own dependencies (the message then names the package).
        purpose: what needs it, for the message, e.g. "backend='dali'".
        package: the pip package when its name differs from the import name ("scikit-learn").

    Returns:
        The imported module.

    Raises:
        MissingExtraError: the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(package or module, extra, purpose) from None


def available(module: str) -> bool:
    """True when ``module`` imports (it is then imported)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
