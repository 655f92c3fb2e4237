"""The package type-checks, passes ruff, and keeps its architecture contracts (import-linter)."""
from __future__ import annotations

import subprocess
import sys

from .helpers import ROOT


def test_mypy():
    res = subprocess.run([sys.executable, "-m", "mypy", "registry_tools", "--ignore-missing-imports",
                          "--cache-dir", "/tmp/registry-tools-mypy-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "registry_tools", "tests", "bench"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_import_contracts():
    """The model imports nothing of the registry or the formats; formats never import the registry;
    nothing imports the CLI; the packages stack in layers (pyproject.toml [tool.importlinter])."""
    res = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.exit(lint_imports_command())", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_sizes_stay_readable():
    """No module over 400 lines, no class over 200, no function over 60 (ARCHITECTURE's habits)."""
    import ast

    too_big = []
    for path in sorted((ROOT / "registry_tools").rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if text.count("\n") > 400:
            too_big.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            limit = 200 if isinstance(node, ast.ClassDef) else 60
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.end_lineno - node.lineno + 1 > limit:
                too_big.append(f"{rel}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, "\n".join(too_big)


def test_one_worker_pool_per_operation():
    """Threads for concurrent work come from the operation's Workers only (registry_tools/workers.py):
    no other module makes a thread pool of its own."""
    makers = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "registry_tools").rglob("*.py"))
              if "ThreadPoolExecutor" in p.read_text() or "ProcessPoolExecutor" in p.read_text()]
    assert makers == ["registry_tools/workers.py"]
