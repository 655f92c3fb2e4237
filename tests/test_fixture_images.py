"""The committed test images are what tests/support/imagegen.py builds (see fixtures/README.md)."""
from __future__ import annotations

import json
import zlib

from .helpers import IMAGES
from .support.make_fixture_images import build_all

COMMITTED = json.loads((IMAGES / "facts.json").read_text())


def test_images_rebuild_to_the_committed_ones(tmp_path):
    rebuilt = build_all(tmp_path)
    for name in ("single-gzip", "single-zstd", "single-none", "docker-types"):
        # What the layers hold does not depend on the compressor's version: it must match exactly.
        assert rebuilt[name]["diff_ids"] == COMMITTED[name]["diff_ids"], name
    assert rebuilt["single-none"] == COMMITTED["single-none"]  # no compression at all: byte for byte
    if zlib.ZLIB_VERSION == "1.2.13" or rebuilt["single-gzip"]["layers"] == COMMITTED["single-gzip"]["layers"]:
        # With the zlib they were made with, the compressed images are identical too.
        assert rebuilt == COMMITTED
