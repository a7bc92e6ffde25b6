"""The layer rules (docs/architecture.md) as tests, so that CI (scripts/test) checks them as scripts/check does:
import-linter's contracts in pyproject.toml, and the one rule about tests: core tests use a neutral codec."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert found, "import-linter is a test extra: pip install -e '.[test]'"
    return found


def test_import_contracts_are_kept() -> None:
    result = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 kept, 0 broken" in result.stdout, result.stdout  # every contract of pyproject.toml ran


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_core_tests_use_a_neutral_codec_not_a_protocol() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imported_modules(path)
                                            if name.startswith(("mailslot.frontends", "mailslot.protocols")))
        for path in sorted((ROOT / "tests" / "unit" / "core").glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) > 5  # the scan did find the core tests
