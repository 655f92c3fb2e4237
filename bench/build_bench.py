"""build benchmark: a tree of real /usr files (>= 1 GiB) into a gzip-layered OCI layout.

Ours: `registry-tools build SPEC --oci DIR` (cold layer cache). The nixpkgs approach, in
the same run: stream an uncompressed docker-archive (as streamLayeredImage does), then
`skopeo copy docker-archive:… oci:…`, which compresses the layers. Alternating, N runs.
Usage: python3 bench/build_bench.py [--runs 3] [--size-mb 1100]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import measure, median

# Several trees of real files, big and small, as a Nix closure has several store paths.
DIRS = ["/usr/lib/jvm", "/usr/lib/llvm-14", "/usr/share/locale", "/usr/lib/gcc", "/usr/share/doc", "/usr/share/man",
        "/usr/lib/x86_64-linux-gnu", "/usr/share"]


def du(path: str) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for n in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
                total += st.st_size
            except OSError:
                pass
    return total


def bench_tree(size_mb: int) -> tuple[list[dict], int]:
    """`paths` entries for the first DIRS that add up to size_mb, and their total size."""
    paths, total = [], 0
    for d in DIRS:
        if os.path.isdir(d) and total < size_mb * 1_000_000:
            paths.append({"source": d, "target": d})
            total += du(d)
    return paths, total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=1100)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-build-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    paths, total = bench_tree(args.size_mb)
    spec = {"name": "bench/usr", "tag": "bench", "paths": paths, "compressor": "gz",
            "config": {"Cmd": ["/usr/bin/bash"]}}
    (work / "spec.json").write_text(json.dumps(spec))
    print(f"tree: {len(paths)} directories, {total / 1e6:.0f} MB", flush=True)
    ours, theirs, rss = [], [], []
    py = sys.executable
    for run in range(args.runs):
        for p in ("ours", "theirs", "stream.tar", "cache"):
            shutil.rmtree(work / p, ignore_errors=True) if (work / p).is_dir() else (work / p).unlink(missing_ok=True)
        t1, _ = measure([py, "-m", "registry_tools", "build", str(work / "spec.json"), "-o", str(work / "stream.tar"),
                         "-q", "--cache-dir", str(work / "cache-stream")])
        t2, _ = measure(["skopeo", "copy", "--quiet", f"docker-archive:{work / 'stream.tar'}", f"oci:{work / 'theirs'}:bench"],
                        env=dict(os.environ, TMPDIR=str(work)))
        theirs.append(t1 + t2)
        t, peak = measure([py, "-m", "registry_tools", "build", str(work / "spec.json"), "--oci", str(work / "ours"),
                           "-q", "--cache-dir", str(work / "cache")])
        ours.append(t)
        rss.append(peak)
        print(f"run {run + 1}: stream+skopeo {t1:.2f}+{t2:.2f}={theirs[-1]:.2f}s  registry-tools {t:.2f}s "
              f"(peak {peak} MB)", flush=True)
    sizes = sum(p.stat().st_size for p in (work / "ours" / "blobs" / "sha256").iterdir())
    print(f"our layout: {sizes / 1e6:.0f} MB of blobs")
    print(f"median nixpkgs approach (stream, then skopeo copy to oci): {median(theirs):.2f} s")
    print(f"median registry-tools build --oci:                         {median(ours):.2f} s   peak RSS {max(rss)} MB")
    print(f"ratio (ours / nixpkgs approach): {median(ours) / median(theirs):.3f}")
    shutil.rmtree(work / "cache-stream", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
