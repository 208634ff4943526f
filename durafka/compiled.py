"""Which of durafka's modules this installation runs compiled.

A wheel built with ``DURAFKA_COMPILE=1`` carries the processor's hot path
(the replay engine, the codec, a batch's steps and statuses; ``setup.py``
lists them) as C extensions compiled by mypyc, next to their Python sources.
Python imports an extension before a source of the same name, so both
builds run the same code; the compiled one spends less CPU per instance.
``durafka bench`` prints which build it measured.

Example::

    >>> from durafka.compiled import build_description
    >>> build_description()  # doctest: +SKIP
    'compiled (10 modules)'
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

__all__ = ["build_description", "compiled_modules"]

_PACKAGE = Path(__file__).resolve().parent


def compiled_modules() -> list[str]:
    """The dotted names of durafka's modules present as compiled extensions, sorted.

    Empty for a pure-Python installation (an editable install, or a wheel built
    without ``DURAFKA_COMPILE=1``).
    """
    # Most specific first (".cpython-311-x86_64-linux-gnu.so" before ".so").
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    names: set[str] = set()
    for path in _PACKAGE.rglob("*"):
        suffix = next((s for s in suffixes if path.name.endswith(s)), None)
        if suffix is not None:
            parts = path.relative_to(_PACKAGE.parent).parts
            names.add(".".join((*parts[:-1], path.name.removesuffix(suffix))))
    return sorted(names)


def build_description() -> str:
    """``"pure Python"`` or ``"compiled (N modules)"``: what a benchmark ran."""
    modules = compiled_modules()
    return f"compiled ({len(modules)} modules)" if modules else "pure Python"
