"""docs/configuration.md is generated from Settings and cannot drift from it."""

from __future__ import annotations

from pathlib import Path

from durafka.configdoc import main, render
from durafka.settings import Settings
from tests.support.processes import REPO_ROOT


def test_the_page_is_current() -> None:
    page = REPO_ROOT / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == render(), "run: python -m durafka.configdoc"
    assert main(["--check", "--path", str(page)]) == 0


def test_every_setting_is_documented_with_its_variable() -> None:
    page = render()
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
        assert f"| `{name}` | `DURAFKA_{name.upper()}` |" in page


def test_a_stale_page_is_reported(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n")
    assert main(["--check", "--path", str(stale)]) == 1
