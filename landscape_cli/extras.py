"""Optional dependencies, installed by the package's extras, and one error line when missing.

``pip install landscape`` measures your own networks (torch, torchvision and the registry's
models; CIFAR, image folders and the embedded digits). Two extras add the rest::

    pip install 'landscape[hf]'     # Hugging Face folders (hf:) and text data (text:FILE):
                                    # transformers, datasets, pandas
    pip install 'landscape[timm]'   # timm:NAME models

(``pip install -e '.[dev]'``, what ``make test`` and ``make demo`` run, installs both.) A run that
needs a package of an extra that is not installed stops with one line naming the extra, through
:func:`require`, before anything is computed.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from landscape_cli.errors import LandscapeError

__all__ = ["EXTRAS", "require"]

#: Each optional package and the extra that installs it.
EXTRAS = {"transformers": "hf", "datasets": "hf", "pandas": "hf", "timm": "timm"}


def require(module: str, what: str) -> ModuleType:
    """Import the optional package ``module``, or refuse ``what`` in one line naming its extra.

    Args:
        module: a package of :data:`EXTRAS` (or one of its modules).
        what: what needs it, for the message ("the Hugging Face folder runs/bert").

    Raises:
        LandscapeError: the package (or one of its own dependencies) is not installed.
    """
    extra = EXTRAS[module.split(".")[0]]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise LandscapeError(
            f"{what} needs the optional package {module.split('.')[0]}, which is not installed "
            f"(no module {missing!r}): pip install 'landscape[{extra}]'"
        ) from None
