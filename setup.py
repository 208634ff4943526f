"""Build hook: a wheel carries ``schemas/``, ``topology/``, the broker pom and image recipes.

They live next to ``durafka/`` in the repository (the project layout); an
installed durafka finds its copies at ``durafka/schemas`` and
``durafka/topology`` (see ``durafka/resources.py``). Everything else is in
``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
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


setup(cmdclass={"build_py": BuildPyWithResources})
