"""emu/ is the generic emulator: it never imports a particular world (procd_model/ may import emu)."""

from __future__ import annotations

import ast
from pathlib import Path

EMU = Path(__file__).resolve().parent.parent / "emu"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


def test_emu_never_imports_procd_model() -> None:
    offenders = {
        str(path.relative_to(EMU.parent)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "procd_model")
        for path in sorted(EMU.rglob("*.py"))
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from procd_model.ops import MODEL_FACTS\nimport procd_model.kernel\n")
    assert imported_modules(module) == {"procd_model.ops", "procd_model.kernel"}
