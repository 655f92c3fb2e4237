"""Layer pins against full pins, in the same run, on one local registry.

prefetch: the 1 GiB benchmark image of pull_bench ("even": 5 gzip layers) pinned with
`prefetch --layers` and with a full `prefetch`, alternating, each with a cold cache; and
`--layers` of a small image beside it, to show that what a layer pin reads does not
depend on the image's size.

update: a lock of 50 images (a small one under 50 repositories), of layer pins and of full
pins, made before 5 of the tags move to 1 GiB images (the benchmark image with one small
layer of its own on top: 5 distinct images); then `prefetch --from --update` of each lock,
alternating, each from the lock as it was and with a cold cache.

Prints the medians, the ratios (layer pins / full pins), and the requests and the bytes the
registry answered each command with (from its log).
Usage: python3 bench/pin_bench.py [--runs 3] [--size-mb 1024] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import LocalRegistry, imagegen, measure, median, run_from_checkout, skopeo_push_layout
from pull_bench import build_image

LOCK_SIZE = 50
MOVED = (3, 14, 25, 36, 47)  # the tags that move


def served(reg: LocalRegistry, offset: int) -> tuple[int, int]:
    """(requests, bytes) the registry answered since `offset` (its version check left out)."""
    with open(reg.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    count = total = 0
    for line in text.splitlines():
        if "response completed" not in line or "http.request.uri=/v2/ " in line:
            continue
        count += 1
        m = re.search(r"http\.response\.written=(\d+)", line)
        total += int(m.group(1)) if m else 0
    return count, total


def tool(work: Path, *args: str) -> float:
    """One registry-tools command with a cold cache: its wall time."""
    shutil.rmtree(work / "cache", ignore_errors=True)
    t, _ = measure([sys.executable, "-m", "registry_tools", *args, "-q", "--cache-dir", str(work / "cache")])
    return t


def variant(work: Path, base: Path, i: int) -> Path:
    """The benchmark image with one small layer of its own on top (blobs linked, not copied)."""
    layout = work / f"moved-{i}"
    if layout.exists():
        shutil.rmtree(layout)
    shutil.copytree(base, layout, copy_function=os.link)
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    lay = imagegen.Layout()
    top, diff_id = lay.layer({f"etc/variant-{i}": f"{i}\n".encode()}, "gzip")
    config["rootfs"]["diff_ids"].append(diff_id)
    cfg = lay.add(imagegen.Blob(imagegen.OCI_CONFIG, json.dumps(config).encode()))
    manifest = dict(manifest, config=cfg.descriptor(), layers=manifest["layers"] + [top.descriptor()])
    man = lay.add(imagegen.Blob(imagegen.OCI_MANIFEST, json.dumps(manifest).encode()))
    for b in (top, cfg, man):
        (blobs / b.digest.split(":")[1]).write_bytes(b.data)
    index["manifests"] = [man.descriptor(annotations={"org.opencontainers.image.ref.name": "bench"})]
    (layout / "index.json").unlink()  # a link to the base layout's: replaced, not written through
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def small_image(work: Path) -> Path:
    lay = imagegen.Layout()
    layers = [lay.layer(imagegen.sample_files(f"small-{i}", n=8, size=40000), "gzip") for i in range(3)]
    img = lay.image(layers)
    lay.tag(img, "bench")
    return lay.write(work / "small")


def prefetches(work: Path, reg: LocalRegistry, runs: int, size_mb: int) -> None:
    big, small = f"{reg.host}/bench/even:bench", f"{reg.host}/bench/small:bench"
    times: dict[str, list[float]] = {"full": [], "layers": []}
    for run in range(runs):
        for kind in ("full", "layers"):
            mark = reg.log_offset()
            times[kind].append(tool(work, "prefetch", big, *(["--layers"] if kind == "layers" else [])))
            count, size = served(reg, mark)
            print(f"run {run + 1} prefetch {kind:6}: {times[kind][-1]:.2f}s, {count} requests, "
                  f"{size / 1e6:.3f} MB served", flush=True)
    mark = reg.log_offset()
    tool(work, "prefetch", small, "--layers")
    small_count, small_bytes = served(reg, mark)
    mark = reg.log_offset()
    tool(work, "prefetch", big, "--layers")
    big_count, big_bytes = served(reg, mark)
    full, layers = median(times["full"]), median(times["layers"])
    print(f"prefetch of the {size_mb} MB image: full {full:.2f} s, --layers {layers:.3f} s, "
          f"ratio {layers / full:.3f}")
    print(f"prefetch --layers served: {size_mb} MB image {big_count} requests, {big_bytes} bytes; "
          f"small image {small_count} requests, {small_bytes} bytes")


def updates(work: Path, reg: LocalRegistry, base: Path, runs: int) -> None:
    listing = work / "images.txt"
    listing.write_text("".join(f"{reg.host}/bench/lk{i}:v1\n" for i in range(LOCK_SIZE)))
    small = small_image(work)
    for i in range(LOCK_SIZE):
        skopeo_push_layout(small, "bench", f"{reg.host}/bench/lk{i}:v1", all_images=False)
    locks = {}
    for kind in ("full", "layers"):
        shutil.rmtree(work / "cache", ignore_errors=True)
        locks[kind] = subprocess.run([sys.executable, "-m", "registry_tools", "prefetch", "--from", str(listing),
                                      "--json", "-q", "--cache-dir", str(work / "cache"),
                                      *(["--layers"] if kind == "layers" else [])],
                                     capture_output=True, text=True, check=True).stdout
    for n, i in enumerate(MOVED):
        skopeo_push_layout(variant(work, base, n), "bench", f"{reg.host}/bench/lk{i}:v1", all_images=False)
    times: dict[str, list[float]] = {"full": [], "layers": []}
    for run in range(runs):
        for kind in ("full", "layers"):
            lock = work / f"{kind}.lock.json"
            lock.write_text(locks[kind])
            mark = reg.log_offset()
            times[kind].append(tool(work, "prefetch", "--from", str(listing), "--update", str(lock)))
            count, size = served(reg, mark)
            changed = sum(a != b for a, b in zip(json.loads(locks[kind])["images"],
                                                 json.loads(lock.read_text())["images"], strict=True))
            print(f"run {run + 1} update {kind:6}: {times[kind][-1]:.2f}s, {count} requests, "
                  f"{size / 1e6:.1f} MB served, {changed} entries changed", flush=True)
    full, layers = median(times["full"]), median(times["layers"])
    print(f"update of a lock of {LOCK_SIZE}, {len(MOVED)} tags moved: full pins {full:.2f} s, layer pins "
          f"{layers:.3f} s, ratio {layers / full:.3f}")


def main() -> int:
    run_from_checkout()  # from anywhere, as installed
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = build_image(work, args.size_mb, "even")
    shutil.rmtree(work / "registry-pins", ignore_errors=True)
    reg = LocalRegistry(work / "registry-pins").start()
    try:
        skopeo_push_layout(base, "bench", f"{reg.host}/bench/even:bench", all_images=False)
        skopeo_push_layout(small_image(work), "bench", f"{reg.host}/bench/small:bench", all_images=False)
        prefetches(work, reg, args.runs, args.size_mb)
        updates(work, reg, base, args.runs)
    finally:
        reg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
