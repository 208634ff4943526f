"""What the compiled build (``DURAFKA_COMPILE=1``) compiles: setup.py's list."""

from __future__ import annotations

import ast

from tests.support.processes import REPO_ROOT


def listed_in_setup() -> list[str]:
    """The dotted names of setup.py's ``COMPILED_MODULES``, sorted."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "COMPILED_MODULES" for t in targets):
                assert node.value is not None
                paths = ast.literal_eval(node.value)
                return sorted(p.removesuffix(".py").replace("/", ".") for p in paths)
    raise AssertionError("setup.py has no COMPILED_MODULES")
