"""push benchmarks against a registry emptied for each run.

cold: the build benchmark's tree built and pushed by us (`build --push`, cold layer cache)
      against the nixpkgs approach (stream a docker-archive, then `skopeo copy
      docker-archive:… docker://…`, skopeo's blob cache cleared).
warm: our same push again after one small input file changed: only that layer (and the
      config and manifests) may be uploaded.
cold machine (--cold-machine): a closure of ~1.1 GB of store paths (the same /usr trees,
      hard-linked into a store directory) pushed from an empty cache, then pushed again from
      another empty cache to the same registry (a new CI machine): the second reads the
      layers' input keys back from the registry and packs and uploads nothing.
Usage: python3 bench/push_bench.py [--runs 3] [--cold-machine]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from build_bench import bench_tree
from common import LocalRegistry, measure, median, run_from_checkout

SKOPEO_CACHES = ["/var/lib/containers/cache/blob-info-cache-v1.boltdb",
                 os.path.expanduser("~/.local/share/containers/cache/blob-info-cache-v1.boltdb")]


def main() -> int:
    run_from_checkout()  # from anywhere, as installed
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=1100)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-push-bench"))
    ap.add_argument("--cold-machine", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.cold_machine:
        return cold_machine(work, args.runs, args.size_mb)
    paths, total = bench_tree(args.size_mb)
    small = work / "small"
    small.mkdir()
    (small / "version").write_text("1\n")
    paths.append({"source": str(small), "target": "/etc/app"})
    (work / "spec.json").write_text(json.dumps({"name": "bench/usr", "tag": "bench", "paths": paths,
                                                "config": {"Cmd": ["/usr/bin/bash"]}}))
    print(f"tree: {len(paths)} inputs, {total / 1e6:.0f} MB", flush=True)
    py = sys.executable
    cold_ours, cold_theirs, warm, rss = [], [], [], []
    for run in range(args.runs):
        (small / "version").write_text("1\n")
        for name in ("cache", "cache-stream", "stream.tar", "reg-a", "reg-b"):
            p = work / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        for c in SKOPEO_CACHES:
            Path(c).unlink(missing_ok=True)
        theirs_reg = LocalRegistry(work / "reg-a").start()
        try:
            t1, _ = measure([py, "-m", "registry_tools", "build", str(work / "spec.json"), "-o", str(work / "stream.tar"),
                             "-q", "--cache-dir", str(work / "cache-stream")])
            t2, _ = measure(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                             f"docker-archive:{work / 'stream.tar'}", f"docker://{theirs_reg.host}/bench/usr:bench"],
                            env=dict(os.environ, TMPDIR=str(work)))
        finally:
            theirs_reg.stop()
        cold_theirs.append(t1 + t2)
        ours_reg = LocalRegistry(work / "reg-b").start()
        try:
            cmd = [py, "-m", "registry_tools", "build", str(work / "spec.json"), "--push",
                   f"{ours_reg.host}/bench/usr:bench", "-q", "--cache-dir", str(work / "cache")]
            t, peak = measure(cmd)
            cold_ours.append(t)
            rss.append(peak)
            (small / "version").write_text("2\n")  # one small file changes
            mark = ours_reg.log_offset()
            tw, _ = measure(cmd)
            warm.append(tw)
            writes = [(m, u) for m, u in ours_reg.requests_since(mark) if m in ("POST", "PATCH", "PUT")]
            blob_puts = [u for m, u in writes if m == "PUT" and "/blobs/" in u]
        finally:
            ours_reg.stop()
        print(f"run {run + 1}: nixpkgs approach {t1:.2f}+{t2:.2f}={cold_theirs[-1]:.2f}s  ours cold {t:.2f}s "
              f"(peak {peak} MB)  ours warm {tw:.2f}s: {len(blob_puts)} blob(s) uploaded, "
              f"{len([w for w in writes if '/manifests/' in w[1]])} manifest PUT(s)", flush=True)
    print(f"median cold, nixpkgs approach (stream, skopeo copy to registry): {median(cold_theirs):.2f} s")
    print(f"median cold, registry-tools build --push:                      {median(cold_ours):.2f} s   peak RSS {max(rss)} MB")
    print(f"cold ratio (ours / nixpkgs approach): {median(cold_ours) / median(cold_theirs):.3f}")
    print(f"median warm push after one small change: {median(warm):.2f} s")
    print(f"warm ratio (warm / our cold push): {median(warm) / median(cold_ours):.3f}")
    return 0


def cold_machine(work: Path, runs: int, size_mb: int) -> int:
    import subprocess

    paths, total = bench_tree(size_mb)
    store = work / "store"
    store.mkdir()
    graph = []
    for i, p in enumerate(paths):
        name = f"{i:032d}-{Path(p['source']).name}"
        subprocess.run(["cp", "-al", p["source"], str(store / name)], check=True)  # hard links: no copying
        graph.append({"path": f"/nix/store/{name}", "references": []})
    (work / "graph.json").write_text(json.dumps(graph))
    (work / "spec.json").write_text(json.dumps({"name": "bench/closure", "tag": "bench",
                                                "closure": {"graph": "graph.json", "realStoreDir": "store"},
                                                "config": {"Cmd": ["/usr/bin/bash"]}}))
    print(f"closure: {len(graph)} store paths, {total / 1e6:.0f} MB", flush=True)
    py = sys.executable
    cold, again = [], []
    for run in range(runs):
        for name in ("cache-a", "cache-b", "reg"):
            shutil.rmtree(work / name, ignore_errors=True)
        reg = LocalRegistry(work / "reg").start()
        try:
            ref = f"{reg.host}/bench/closure:bench"
            t1, peak = measure([py, "-m", "registry_tools", "build", str(work / "spec.json"), "--push", ref, "-q",
                                "--cache-dir", str(work / "cache-a")])
            mark = reg.log_offset()
            t2, _ = measure([py, "-m", "registry_tools", "build", str(work / "spec.json"), "--push", ref, "-q",
                             "--cache-dir", str(work / "cache-b")])
            writes = [u for m, u in reg.requests_since(mark) if m in ("POST", "PATCH", "PUT")]
        finally:
            reg.stop()
        cold.append(t1)
        again.append(t2)
        print(f"run {run + 1}: cold push {t1:.2f}s (peak {peak} MB); the same push from another empty cache "
              f"{t2:.2f}s, {len(writes)} write request(s)", flush=True)
    print(f"median cold push: {median(cold):.2f} s")
    print(f"median push from an empty cache of an image the registry holds: {median(again):.2f} s")
    print(f"ratio (cold machine, warm registry / cold push): {median(again) / median(cold):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
