"""The package list in pyproject.toml names every package of the source tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_installed() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "p2pd").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject.toml: {sorted(found - listed)}"
    assert setuptools["package-dir"] == {"p2pd_cli": "cli"}
    assert "p2pd_cli" in listed


def test_console_scripts_point_at_the_cli_package() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"p2pd": "p2pd_cli.p2pd_main:main", "p2pctl": "p2pd_cli.p2pctl:main"}
