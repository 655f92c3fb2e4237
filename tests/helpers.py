"""Paths shared by the tests."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CORPUS = FIXTURES / "corpus"
IMAGES = FIXTURES / "images"


def load(rel: str):
    return json.loads((CORPUS / rel).read_text())


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The command line in this process: its exit code, stdout and stderr."""
    from registry_tools import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def touch_and_chown(work, i: int) -> None:
    """Other mtimes (and, for i > 0, another owner) on every input below `work`: a build's output
    must not depend on them."""
    import os

    for dirpath, dirnames, filenames in os.walk(work):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.utime(p, (1e9 + i * 12345, 1e9 + i * 12345))
                if i:
                    os.chown(p, 4242, 4242)
