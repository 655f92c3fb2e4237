"""shard benchmark: a lock of many small images mirrored by one process, and by N shards at once.

1. N distinct small images (by default 1,000: one layer of a 4 KiB random file and a config
   each, one repository each) are pushed to a local source registry by `registry-tools`'
   own push (api.push, one session; untimed), and pinned in a lock by `prefetch --from`.
2. Each run mirrors the lock into registries started empty for it:
   - one process: `sync LOCK DEST` (--jobs 6, the default);
   - one process, --jobs 32 (many images in flight, near the 48 of 8 shards together);
   - S shards at once: S processes `sync LOCK DEST --shard i/S` (--jobs 6 each), started
     together; the wall time is from the first start to the last exit;
   - one shard alone (0/S): what each job of a CI matrix or pod of a Job does on a machine
     of its own, while the registries keep up.
   Requests per image are counted from each registry's own log (the mirror's, and the
   source's: a registry destination reads each blob straight from the source).
3. Nothing lost: after the shards, `lock merge` of their mirror locks must be byte for byte
   the lock one unsharded sync writes for the same mirror (that sync, run afterwards, finds
   every image there: one HEAD each), and every manifest of the merged lock is checked by
   digest and by tag in the mirror (a HEAD each, 200 and the digest).
Usage: python3 bench/shard_bench.py [--images 1000] [--shards 8] [--runs 1] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import LocalRegistry, imagegen, median, run_from_checkout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry_tools.api.push import push  # noqa: E402
from registry_tools.session import Session  # noqa: E402


def cpu_of(pid: int) -> float:
    """User and system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rt(*args: str, cache: Path) -> list[str]:
    return [sys.executable, "-m", "registry_tools", *args, "-q", "--cache-dir", str(cache)]


def seed(work: Path, src: LocalRegistry, count: int) -> Path:
    """`count` small images in `src` (src/img0000:v1, ...), and the lock that pins them."""
    layout = work / "small-layout"
    if not (layout / "index.json").exists():
        lay = imagegen.Layout()
        for i in range(count):
            layer = lay.layer({f"data/file{i}": os.urandom(4096), "etc/id": f"{i}\n".encode()}, "gzip")
            lay.tag(lay.image([layer]), f"img{i:04d}")
        lay.write(layout)
    t = time.perf_counter()
    with Session(cache_dir=str(work / "seed-cache")) as session:
        for i in range(count):
            push(f"{layout}:img{i:04d}", f"{src.host}/src/img{i:04d}:v1", session)
    listing = work / "images.txt"
    listing.write_text("".join(f"{src.host}/src/img{i:04d}:v1\n" for i in range(count)))
    lock = work / "images.lock.json"
    with open(lock, "wb") as out:
        subprocess.run(rt("prefetch", "--from", str(listing), "--json", "--jobs", "16", cache=work / "seed-cache"),
                       stdout=out, check=True)
    print(f"seeded {count} images and pinned them in {time.perf_counter() - t:.1f} s", flush=True)
    return lock


def together(commands: list[list[str]]) -> float:
    """Start every command at once; the wall time until the last one exits (each must succeed)."""
    t = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t
    for p, err in zip(procs, errors, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"a sync failed: {err.decode(errors='replace')[-2000:]}")
    return wall


def check_present(mirror: LocalRegistry, lock: Path) -> int:
    """Every manifest the lock pins, by digest and by tag, in the mirror: the number checked."""
    entries = json.loads(lock.read_text())["images"]
    with httpx.Client(base_url=f"http://{mirror.host}", timeout=30) as client:
        for e in entries:
            repo = e["imageName"].split("/", 1)[1]
            for ref in (e["imageDigest"], e["reference"].rsplit(":", 1)[1]):
                r = client.head(f"/v2/{repo}/manifests/{ref}",
                                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
                if r.status_code != 200 or r.headers.get("docker-content-digest") != e["imageDigest"]:
                    raise SystemExit(f"lost: {e['imageName']}@{ref} answered {r.status_code}")
    return len(entries)


def per_image(reg: LocalRegistry, mark: int, count: int) -> str:
    requests = [r for r in reg.requests_since(mark) if r != ("GET", "/v2/")]
    methods: dict[str, int] = {}
    for method, _ in requests:
        methods[method] = methods.get(method, 0) + 1
    detail = ", ".join(f"{m} {n / count:.2f}" for m, n in sorted(methods.items()))
    return f"{len(requests) / count:.2f} ({detail})"


def one_run(work: Path, src: LocalRegistry, lock: Path, count: int, shards: int, run: int) -> dict[str, float]:
    walls: dict[str, float] = {}
    for mode in ("one", "one-jobs32", "shards", "shard-alone"):
        mirror = LocalRegistry(work / f"mirror-{mode}-{run}").start()
        cache = work / f"cache-{mode}-{run}"
        dest = f"{mirror.host}/m"
        mark, src_mark = mirror.log_offset(), src.log_offset()
        cpu = (children_cpu(), cpu_of(mirror.proc.pid), cpu_of(src.proc.pid))
        images = count  # what the requests are counted over
        try:
            if mode == "shards":
                walls[mode] = together([rt("sync", str(lock), dest, "--shard", f"{i}/{shards}", "-o",
                                           str(work / f"shard-{i}.json"), cache=Path(f"{cache}-{i}"))
                                        for i in range(shards)])
            elif mode == "shard-alone":
                walls[mode] = together([rt("sync", str(lock), dest, "--shard", f"0/{shards}", cache=cache)])
                images = len(json.loads((work / "shard-0.json").read_text())["images"])
            else:
                jobs = ["--jobs", "32"] if mode == "one-jobs32" else []
                walls[mode] = together([rt("sync", str(lock), dest, *jobs, "-o", str(work / "one.json"),
                                           cache=cache)])
            used = (children_cpu() - cpu[0], cpu_of(mirror.proc.pid) - cpu[1], cpu_of(src.proc.pid) - cpu[2])
            print(f"run {run + 1}, {mode}: {walls[mode]:.2f} s; CPU s registry-tools/mirror/source "
                  f"{used[0]:.1f}/{used[1]:.1f}/{used[2]:.1f}; requests per image ({images}): mirror "
                  f"{per_image(mirror, mark, images)}, source {per_image(src, src_mark, images)}", flush=True)
            if mode == "shards":
                merged = work / "merged.json"
                subprocess.run([sys.executable, "-m", "registry_tools", "lock", "merge", "-q", "-o", str(merged),
                                *(str(work / f"shard-{i}.json") for i in range(shards))], check=True)
                subprocess.run(rt("sync", str(lock), dest, "-o", str(work / "unsharded.json"), cache=cache),
                               check=True)
                if merged.read_bytes() != (work / "unsharded.json").read_bytes():
                    raise SystemExit("the merged mirror lock is not the unsharded sync's")
                print(f"run {run + 1}: merged lock == unsharded sync's lock; {check_present(mirror, merged)} "
                      "manifests present by digest and by tag", flush=True)
        finally:
            mirror.stop()
            shutil.rmtree(mirror.root, ignore_errors=True)
            for c in work.glob(f"cache-{mode}-{run}*"):
                shutil.rmtree(c, ignore_errors=True)
    return walls


def main() -> int:
    run_from_checkout()  # from anywhere, as installed
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-shard-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src = LocalRegistry(work / "source").start()
    try:
        lock = seed(work, src, args.images)
        walls = [one_run(work, src, lock, args.images, args.shards, run) for run in range(args.runs)]
    finally:
        src.stop()
        shutil.rmtree(src.root, ignore_errors=True)
    one, wide, sharded, alone = (median([w[m] for w in walls]) for m in ("one", "one-jobs32", "shards",
                                                                           "shard-alone"))
    print(f"{args.images} images: one process {one:.2f} s, one process --jobs 32 {wide:.2f} s, "
          f"{args.shards} shards at once {sharded:.2f} s, one shard alone {alone:.2f} s; shards at once / one "
          f"process {sharded / one:.3f}, one shard alone / one process {alone / one:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
