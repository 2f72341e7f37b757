"""The test suite's own rules, read from its code (ast): tests mirror the packages,
helpers live in tests/support/, no test module or conftest.py is imported."""

from __future__ import annotations

import ast

from tests.support.paths import ROOT

TESTS = ROOT / "tests"


def imported(path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_no_test_module_or_conftest_is_imported():
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in imported(path):
            last = name.split(".")[-1]
            if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "move shared helpers into tests/support/: " + "; ".join(bad)


def test_tests_mirror_the_packages():
    packages = [p.relative_to(ROOT / "stream") for p in sorted((ROOT / "stream").iterdir())
                if (p / "__init__.py").exists()]
    missing = [f"tests/{p}" for p in packages if not (TESTS / p).is_dir()]
    missing += [f"tests/nodes/{p.name}" for p in sorted((ROOT / "nodes").iterdir())
                if (p / "__init__.py").exists() and not (TESTS / "nodes" / p.name).is_dir()]
    assert not missing, f"no test folder for {missing}"
