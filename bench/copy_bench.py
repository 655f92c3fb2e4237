"""copy benchmark: a multi-arch index between two local registries, and a sync that is complete.

1. A ~1 GiB index of 4 platforms (linux/amd64, arm64, arm/v7, ppc64le) sharing two base
   layers, each with a layer of its own, copied from registry A to registry B by
   `skopeo copy --all docker://A/... docker://B/...` and by `registry-tools copy`,
   alternating, N runs each. Each copy goes to a registry B started for it alone, so
   neither tool's memory of where blobs are (skopeo's blob-info cache, our cache's
   sources) turns uploads into mounts. A third contender, bench/bare_relay.py (raw
   sockets, sha256, nothing else), shows the floor of a copy in Python on this machine:
   the registries' own CPU is most of the work, and it is the same for every copier.
   Our copy and the bare relay must both leave the index's digest unchanged (checked).
2. 50 small images (one 3 MB layer each, the size of alpine's) pinned in a lock, mirrored by `registry-tools sync` to an empty
   registry, then synced again: the second sync must cost at most 0.1x the first.
Prints medians, the ratios and our peak memory.
Usage: python3 bench/copy_bench.py [--runs 3] [--size-mb 1024] [--images 50] [--work DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import resource
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from common import LocalRegistry, imagegen, measure, median, run_from_checkout

PLATFORMS = [("amd64", ""), ("arm64", "v8"), ("arm", "v7"), ("ppc64le", "")]


def _random_layer(path: Path, size: int, seed: str) -> tuple[str, str, int]:
    """An uncompressed tar of one file of random bytes, written to blobs/; (digest, diff_id, size)."""
    tmp = path / f".{seed}.tar"
    data_file = path / f".{seed}.bin"
    with open(data_file, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tf.gettarinfo(str(data_file), arcname=f"data/{seed}.bin")
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        with open(data_file, "rb") as f:
            tf.addfile(info, f)
    data_file.unlink()
    digest = "sha256:" + subprocess.run(["sha256sum", str(tmp)], capture_output=True, text=True,
                                        check=True).stdout.split()[0]
    target = path / digest.split(":")[1]
    tmp.rename(target)
    return digest, digest, target.stat().st_size


def build_index(work: Path, size_mb: int) -> Path:
    """Two shared layers (40% of the bytes) and one per platform (15% each), as an OCI layout."""
    layout = work / "multi-layout"
    if (layout / "index.json").exists():
        return layout
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    total = size_mb << 20
    shared = [_random_layer(blobs, int(total * 0.2), f"shared{i}") for i in range(2)]
    entries = []
    for arch, variant in PLATFORMS:
        own = _random_layer(blobs, int(total * 0.15), f"{arch}{variant}")
        layers = shared + [own]
        config = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {}),
                  "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]}, "config": {}}
        cfg = imagegen.Blob(imagegen.OCI_CONFIG, json.dumps(config).encode())
        man = imagegen.Blob(imagegen.OCI_MANIFEST, json.dumps({
            "schemaVersion": 2, "mediaType": imagegen.OCI_MANIFEST, "config": cfg.descriptor(),
            "layers": [{"mediaType": imagegen.LAYER_TYPES["none"], "digest": d, "size": s} for d, _, s in layers]
        }).encode())
        for b in (cfg, man):
            (blobs / b.digest.split(":")[1]).write_bytes(b.data)
        entries.append(man.descriptor(platform={"os": "linux", "architecture": arch,
                                                **({"variant": variant} if variant else {})}))
    index = imagegen.Blob(imagegen.OCI_INDEX, json.dumps({"schemaVersion": 2, "mediaType": imagegen.OCI_INDEX,
                                                          "manifests": entries}).encode())
    (blobs / index.digest.split(":")[1]).write_bytes(index.data)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        index.descriptor(annotations={"org.opencontainers.image.ref.name": "bench"})]}))
    return layout


def cpu_of(pid: int) -> float:
    """User and system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rt(*args: str, cache: Path) -> list[str]:
    return [sys.executable, "-m", "registry_tools", *args, "-q", "--cache-dir", str(cache)]


def _digest_of(host: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/bench/multi:bench"],
                         capture_output=True, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _check_copied(host: str, digest: str) -> None:
    if _digest_of(host) != digest:
        raise SystemExit(f"the copy at {host} is not the index {digest}")


def bench_index(work: Path, runs: int, size_mb: int) -> None:
    layout = build_index(work, size_mb)
    src = LocalRegistry(work / "registry-a").start()
    try:
        subprocess.run(["skopeo", "copy", "--all", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                        f"oci:{layout}:bench", f"docker://{src.host}/bench/multi:bench"], check=True)
        src_digest = _digest_of(src.host)
        ours, theirs, bare, rss = [], [], [], []
        cpu: dict[str, list[str]] = {"skopeo": [], "ours": [], "bare": []}
        for run in range(runs):
            for tool in ("skopeo", "ours", "bare"):
                dest = LocalRegistry(work / f"registry-b-{tool}-{run}").start()
                before = (children_cpu(), cpu_of(src.proc.pid), cpu_of(dest.proc.pid))
                try:
                    if tool == "skopeo":
                        t, _ = measure(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false",
                                        "--dest-tls-verify=false", f"docker://{src.host}/bench/multi:bench",
                                        f"docker://{dest.host}/bench/multi:bench"])
                        theirs.append(t)
                    elif tool == "bare":
                        t, _ = measure([sys.executable, str(Path(__file__).with_name("bare_relay.py")),
                                        f"{src.host}/bench/multi:bench", f"{dest.host}/bench/multi:bench"])
                        bare.append(t)
                    else:
                        cache = work / f"cache-{run}"
                        t, peak = measure(rt("copy", f"{src.host}/bench/multi:bench",
                                             f"{dest.host}/bench/multi:bench", cache=cache))
                        ours.append(t)
                        rss.append(peak)
                        shutil.rmtree(cache, ignore_errors=True)
                    if tool != "skopeo":
                        _check_copied(dest.host, src_digest)
                    cpu[tool].append(f"{children_cpu() - before[0]:.1f}/{cpu_of(src.proc.pid) - before[1]:.1f}/"
                                     f"{cpu_of(dest.proc.pid) - before[2]:.1f}")
                finally:
                    dest.stop()
                    shutil.rmtree(dest.root, ignore_errors=True)
            print(f"run {run + 1}: skopeo {theirs[-1]:.2f}s  registry-tools {ours[-1]:.2f}s  (peak {rss[-1]} MB)  "
                  f"bare relay {bare[-1]:.2f}s; CPU s tool/source/destination: skopeo {cpu['skopeo'][-1]}, "
                  f"registry-tools {cpu['ours'][-1]}, bare relay {cpu['bare'][-1]}", flush=True)
        unique = sum(p.stat().st_size for p in (layout / "blobs/sha256").iterdir())
        print(f"index copy: {len(PLATFORMS)} platforms, {unique / 1e6:.0f} MB of blobs; skopeo {median(theirs):.2f} s, "
              f"registry-tools {median(ours):.2f} s (peak RSS {max(rss)} MB), "
              f"ratio {median(ours) / median(theirs):.3f}")
        print(f"bare relay (bench/bare_relay.py: the floor of a copy in Python on this machine): {median(bare):.2f} s, "
              f"ratio {median(bare) / median(theirs):.3f} of skopeo; registry-tools is {median(ours) / median(bare):.2f}x it")
    finally:
        src.stop()


def bench_sync(work: Path, count: int) -> None:
    src = LocalRegistry(work / "registry-sync-a").start()
    cache = work / "cache-sync"
    try:
        listing = work / "images.txt"
        lines = []
        for i in range(count):
            layout = work / f"small3m-{i}"
            if not layout.exists():
                lay = imagegen.Layout()
                layer = lay.layer({f"bin/tool{i}": os.urandom(3 << 20), "etc/release": f"{i}\n".encode()}, "gzip")
                lay.tag(lay.image([layer]), "v1")
                lay.write(layout)
            subprocess.run(rt("copy", f"oci:{layout}:v1", f"docker://{src.host}/small/img{i}:v1", cache=cache),
                           check=True)
            lines.append(f"{src.host}/small/img{i}:v1\n")
        listing.write_text("".join(lines))
        lock = work / "small.lock.json"
        with open(lock, "w") as f:
            subprocess.run(rt("prefetch", "--from", str(listing), "--json", cache=cache), stdout=f, check=True)
        firsts, agains = [], []
        for run in range(3):
            dest = LocalRegistry(work / f"registry-sync-b-{run}").start()
            try:
                first, _ = measure(rt("sync", str(lock), "--to", f"{dest.host}/mirror", cache=cache))
                again, peak = measure(rt("sync", str(lock), "--to", f"{dest.host}/mirror", cache=cache))
            finally:
                dest.stop()
                shutil.rmtree(dest.root, ignore_errors=True)
            firsts.append(first)
            agains.append(again)
            print(f"sync run {run + 1}: first {first:.2f}s, again {again:.2f}s (peak {peak} MB)", flush=True)
        print(f"sync of {count} images: first {median(firsts):.2f} s, complete again {median(agains):.2f} s, "
              f"ratio {median(agains) / median(firsts):.3f}")
    finally:
        src.stop()


def main() -> int:
    run_from_checkout()  # from anywhere, as installed
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--only", choices=("index", "sync"))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-copy-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.only != "sync":
        bench_index(work, args.runs, args.size_mb)
    if args.only != "index":
        bench_sync(work, args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
