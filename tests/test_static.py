"""The package type-checks, and no module has unused imports or undefined names."""
from __future__ import annotations

import subprocess
import sys

from .helpers import ROOT


def test_mypy():
    res = subprocess.run([sys.executable, "-m", "mypy", "registry_tools", "--ignore-missing-imports",
                          "--cache-dir", "/tmp/registry-tools-mypy-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_pyflakes():
    res = subprocess.run([sys.executable, "-m", "pyflakes", "registry_tools", "tests", "bench"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
