"""Build hooks: the data files a wheel carries, and the optional compiled hot path.

A wheel carries ``schemas/``, ``topology/``, the broker pom and image recipes.
They live next to ``durafka/`` in the repository (the project layout); an
installed durafka finds its copies at ``durafka/schemas`` and
``durafka/topology`` (see ``durafka/resources.py``).

``DURAFKA_COMPILE=1`` at build time compiles :data:`COMPILED_MODULES` with
mypyc (a C compiler is needed; an isolated build fetches mypy itself): the
same modules, as C extensions next to their sources; a processor spent
17-33% less CPU per W1 instance (docs/performance.md, "The compiled build").
Without it the wheel is pure Python and behaves the same;
``durafka.compiled.compiled_modules()`` tells which an installation runs.
An editable install is always pure Python: an extension in the checkout
would shadow its edited source. Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: The hot path of a processor: the replay engine, the codec, a batch's steps and
#: statuses. Modules tests subclass or patch (stores, transports, the loop) stay
#: interpreted: mypyc's classes cannot be subclassed from Python.
COMPILED_MODULES = [
    "durafka/codec/fast.py",
    "durafka/codec/records.py",
    "durafka/runtime/context.py",
    "durafka/runtime/executor.py",
    "durafka/runtime/history.py",
    "durafka/runtime/tasks.py",
    "durafka/processor/batch.py",
    "durafka/processor/instances.py",
    "durafka/processor/orchestrations.py",
    "durafka/status.py",
]
#: Folder -> the files of it a wheel needs.
RESOURCES = {
    "schemas": "**/*.avsc",
    "topology": "*.toml",
    "docker/kafka-dist": "pom.xml",
    # The app image's Dockerfile and the local Kafka image's recipe (durafka/dev/podman.py).
    "docker": "Dockerfile",
    "docker/kafka": "*",
}


class BuildPyWithResources(build_py):
    """``build_py`` that also copies :data:`RESOURCES` into ``<build>/durafka/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout
        for folder, pattern in RESOURCES.items():
            for source in sorted((ROOT / folder).glob(pattern)):
                target = Path(self.build_lib, "durafka", folder, source.relative_to(ROOT / folder))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


def compiled_extensions() -> dict[str, Any]:
    """``setup()`` arguments that compile :data:`COMPILED_MODULES`, if ``DURAFKA_COMPILE=1``.

    ``setup_requires`` is how setuptools' PEP 517 backend learns a build
    requirement that depends on the environment: the frontend installs mypy,
    and durafka's dependencies for their types, into the isolated build before
    it builds the wheel (mypyc compiles what mypy's types let it; the same
    types as ``make lint`` checks).
    """
    if os.environ.get("DURAFKA_COMPILE", "").strip().lower() not in ("1", "true", "yes"):
        return {}
    commands = set(sys.argv[1:])
    if commands & {"editable_wheel", "develop"}:
        sys.exit("DURAFKA_COMPILE=1: an editable install stays pure Python; build a wheel")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # mypyc type-checks every module the compiled ones import, the optional tracing
    # module included: its extra is needed for the types (docker/Dockerfile too).
    tracing = project["optional-dependencies"]["tracing"]
    requires = ["mypy>=1.11", *project["dependencies"], *tracing]
    try:
        from mypyc.build import mypycify
    except ImportError:
        if commands & {"bdist_wheel", "build", "build_ext", "install"}:
            sys.exit(
                "DURAFKA_COMPILE=1: mypyc is not in the build environment; install mypy"
                " there (an isolated build, pip's default, installs it itself)"
            )
        return {"setup_requires": requires}  # the frontend asks for the build requirements
    return {
        "setup_requires": requires,
        "ext_modules": mypycify(COMPILED_MODULES, opt_level="3", group_name="durafka"),
    }


setup(cmdclass={"build_py": BuildPyWithResources}, **compiled_extensions())
