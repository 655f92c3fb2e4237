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
