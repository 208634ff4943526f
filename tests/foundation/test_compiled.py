"""The compiled build (``DURAFKA_COMPILE=1``, mypyc) is the modules setup.py lists, or none.

``make test-compiled`` (run by CI after ``make test``) compiles a copy of the
checkout and runs the core suites in it with ``DURAFKA_EXPECT_COMPILED=1``;
everywhere else the tests run the Python sources. An extension module left in
a checkout would shadow its edited source without a word: the pure case
catches that.
"""

from __future__ import annotations

import os
from pathlib import Path

import durafka
from durafka.compiled import build_description, compiled_modules
from tests.support.compiled import listed_in_setup
from tests.support.processes import REPO_ROOT as ROOT


def test_the_build_is_the_one_expected() -> None:
    assert Path(durafka.__file__).resolve().parent == ROOT / "durafka", (
        f"durafka is imported from {durafka.__file__}, not from this checkout"
    )
    if os.environ.get("DURAFKA_EXPECT_COMPILED") == "1":
        assert compiled_modules() == listed_in_setup()
        assert build_description() == f"compiled ({len(listed_in_setup())} modules)"
    else:
        assert compiled_modules() == [], (
            "compiled modules in the checkout shadow their sources: delete "
            + ", ".join(compiled_modules())
            + " (they are built by `make test-compiled` in a copy, never in place)"
        )
        assert build_description() == "pure Python"


def test_the_compiled_modules_exist() -> None:
    for name in listed_in_setup():
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name
