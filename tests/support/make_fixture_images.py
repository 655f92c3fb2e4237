"""Write the committed test images under fixtures/images (run once; the outputs are committed)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import imagegen

ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "images"


def build_all(root: Path) -> dict:
    """Write every test image under `root`; their digests and diff_ids by name."""
    return {
        "multi": imagegen.multi_arch_layout(root / "multi"),
        "single-gzip": imagegen.single_arch_layout(root / "single-gzip", "gzip"),
        "single-zstd": imagegen.single_arch_layout(root / "single-zstd", "zstd"),
        "single-none": imagegen.single_arch_layout(root / "single-none", "none"),
        "docker-types": imagegen.single_arch_layout(root / "docker-types", "gzip", docker=True),
    }


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    facts = build_all(ROOT)
    (ROOT / "facts.json").write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
