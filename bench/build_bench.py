"""build benchmark: a tree of real /usr files (>= 1 GiB) into a gzip-layered OCI layout.

Ours: `registry-tools build SPEC --oci DIR` (cold layer cache). The nixpkgs approach, in
the same run: stream an uncompressed docker-archive (as streamLayeredImage does), then
`skopeo copy docker-archive:… oci:…`, which compresses the layers. Alternating, N runs.
Usage: python3 bench/build_bench.py [--runs 3] [--size-mb 1100]

With --multi: a two-platform spec, ~1.07 GB per platform of which half (one 560 MB tree)
is shared, built and pushed to a local registry as one index (`build --push`, cold
cache); the peer, in the same run, is what a user without multi-arch builds does: each
platform streamed to a docker-archive (streamLayeredImage) and pushed by `skopeo copy`,
then the index put together (`index create`, as no peer can offline). Printed: the bytes
packed and uploaded by each, the time ratio, and what a warm re-push after one file
changed in one platform sends (from the registry's own log).
Usage: python3 bench/build_bench.py --multi [--runs 1]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import LocalRegistry, measure, median, run_from_checkout

SHARED = ["/usr/lib/jvm"]  # ~560 MB in both platforms
OWN = {"linux/amd64": ["/usr/lib/llvm-14", "/usr/share/locale"],
       "linux/arm64/v8": ["/usr/lib/gcc", "/usr/share/doc", "/usr/share/man", "/usr/include", "/usr/libexec"]}

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
    run_from_checkout()  # from anywhere, as installed
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=1100)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-build-bench"))
    ap.add_argument("--multi", action="store_true", help="the two-platform build and push")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.multi:
        return bench_multi(work, args.runs)
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


def _uploads(reg: LocalRegistry, mark: int, repo: str) -> tuple[list[str], list[str]]:
    """(blob digests committed, manifest references PUT) in `repo` since `mark`, from the registry's log."""
    blobs, manifests = [], []
    for method, path in reg.requests_since(mark):
        if method == "PUT" and f"/v2/{repo}/blobs/uploads/" in path:
            blobs.append(path.split("digest=")[1].split("&")[0].replace("%3A", ":"))
        elif method == "PUT" and f"/v2/{repo}/manifests/" in path:
            manifests.append(path.rsplit("/", 1)[1])
    return blobs, manifests


def _blob_bytes(reg_root: Path, digests: list[str]) -> int:
    data = reg_root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return sum((data / d.split(":")[1][:2] / d.split(":")[1] / "data").stat().st_size for d in set(digests))


def bench_multi(work: Path, runs: int) -> int:
    py = sys.executable
    platforms: dict[str, dict] = {}
    for plat, dirs in OWN.items():
        app = work / f"app-{plat.split('/')[1]}"
        app.mkdir(exist_ok=True)
        (app / "version").write_text(f"{plat} 1\n")
        platforms[plat] = {"paths": [{"source": d, "target": d} for d in SHARED + dirs] +
                                    [{"source": str(app), "target": "/app"}]}
    spec = {"name": "bench/multi", "tag": "1", "compressor": "gz", "config": {"Cmd": ["/usr/bin/bash"]},
            "platforms": platforms}
    (work / "multi.json").write_text(json.dumps(spec))
    sizes = {p: sum(du(d) for d in SHARED + dirs) for p, dirs in OWN.items()}
    print("platforms: " + ", ".join(f"{p} {n / 1e6:.0f} MB" for p, n in sizes.items()) +
          f"; shared {sum(du(d) for d in SHARED) / 1e6:.0f} MB", flush=True)
    ours, theirs = [], []
    for run in range(runs):
        for p in ("cache", "cache-peer", "peer.tar"):
            shutil.rmtree(work / p, ignore_errors=True) if (work / p).is_dir() else (work / p).unlink(missing_ok=True)
        reg = LocalRegistry(work / f"registry-{run}").start()
        try:
            mark = reg.log_offset()
            t, peak = measure([py, "-m", "registry_tools", "build", str(work / "multi.json"), "--push",
                               f"{reg.host}/ours/app:1", "-q", "--cache-dir", str(work / "cache")])
            ours.append(t)
            blobs, manifests = _uploads(reg, mark, "ours/app")
            packed = sum(f.stat().st_size for f in (work / "cache" / "blobs" / "sha256").iterdir())
            print(f"run {run + 1}: registry-tools build --push {t:.2f} s (peak {peak} MB): packed {packed / 1e6:.0f} MB "
                  f"into the cache; uploaded {len(blobs)} blobs, {_blob_bytes(reg.root, blobs) / 1e6:.0f} MB; "
                  f"{len(manifests)} manifest PUTs", flush=True)
            mark = reg.log_offset()
            total = 0.0
            for plat in OWN:
                one = dict(spec, **platforms[plat])
                one.pop("platforms")
                one.update(dict(zip(("os", "architecture", "variant"), plat.split("/"), strict=False)))
                (work / "one.json").write_text(json.dumps(one))
                t1, _ = measure([py, "-m", "registry_tools", "build", str(work / "one.json"), "-o",
                                 str(work / "peer.tar"), "-q", "--cache-dir", str(work / "cache-peer")])
                t2, _ = measure(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                                 f"docker-archive:{work / 'peer.tar'}", f"docker://{reg.host}/theirs/app:{plat.split('/')[1]}"],
                                env=dict(os.environ, TMPDIR=str(work)))
                total += t1 + t2
            t3, _ = measure([py, "-m", "registry_tools", "index", "create", f"{reg.host}/theirs/app:1",
                             f"{reg.host}/theirs/app:amd64", f"{reg.host}/theirs/app:arm64", "-q"])
            theirs.append(total + t3)
            blobs, _ = _uploads(reg, mark, "theirs/app")
            print(f"run {run + 1}: per platform, streamLayeredImage + skopeo copy, then index create {theirs[-1]:.2f} s: "
                  f"uploaded {len(blobs)} blobs, {_blob_bytes(reg.root, blobs) / 1e6:.0f} MB", flush=True)
            # warm re-push after one file changed in one platform
            (work / "app-arm64" / "version").write_text(f"linux/arm64/v8 {run + 2}\n")
            mark = reg.log_offset()
            t, _ = measure([py, "-m", "registry_tools", "build", str(work / "multi.json"), "--push",
                            f"{reg.host}/ours/app:1", "-q", "--cache-dir", str(work / "cache")])
            blobs, manifests = _uploads(reg, mark, "ours/app")
            print(f"run {run + 1}: warm re-push after one arm64 file changed {t:.2f} s: uploaded {len(blobs)} blobs "
                  f"({_blob_bytes(reg.root, blobs) / 1e3:.1f} kB: the changed layer and the arm64 config), manifest "
                  f"PUTs {len(manifests)} (the arm64 manifest, the index, its tag)", flush=True)
        finally:
            reg.stop()
            shutil.rmtree(work / f"registry-{run}", ignore_errors=True)
    print(f"median registry-tools build --push of both platforms: {median(ours):.2f} s")
    print(f"median per-platform stream + skopeo copy + index create: {median(theirs):.2f} s")
    print(f"ratio (ours / per-platform approach): {median(ours) / median(theirs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
