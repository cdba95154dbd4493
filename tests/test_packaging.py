"""A plain (non-editable) install carries every Python package of the project: each folder of
emu/ and procd_model/ with an __init__.py is listed in pyproject.toml's packages."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_installed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("emu", "procd_model")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), "packages a plain install would leave out"
