"""Where durafka's data files are: Avro schemas, topology specs, the broker's pom.

In a checkout (and an editable install) they are the repository's top-level
``schemas/``, ``topology/`` and ``docker/kafka-dist/``. A wheel carries copies
inside the package, as ``durafka/schemas`` and so on (``setup.py`` puts them
there), so an installed durafka needs no checkout.

Example:
    >>> (resource_dir("topology") / "default.toml").is_file()
    True
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ResourceNotFoundError", "resource_dir"]

_PACKAGE = Path(__file__).resolve().parent
#: Looked in, in order: the package (an installed wheel), then the checkout.
_ROOTS = (_PACKAGE, _PACKAGE.parent)


class ResourceNotFoundError(FileNotFoundError):
    """A data folder is in neither the installed package nor a checkout."""


def resource_dir(name: str) -> Path:
    """The folder ``name`` (``"schemas"``, ``"topology"``, ``"docker/kafka-dist"``) of durafka.

    Raises:
        ResourceNotFoundError: neither ``durafka/<name>`` nor ``<checkout>/<name>``
            exists, e.g. a wheel built without ``setup.py``'s copy step.
    """
    for root in _ROOTS:
        candidate = root / name
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(root / name) for root in _ROOTS)
    raise ResourceNotFoundError(
        f"durafka's {name}/ folder was not found (looked in {looked}); reinstall durafka "
        "from a wheel or run from a checkout"
    )
