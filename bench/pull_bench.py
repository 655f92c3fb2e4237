"""pull benchmark: a ~1 GiB image in 5 gzip layers, pulled to docker-archive by skopeo and by us.

Both tools pull the same digest from the same local registry, alternating, N runs each,
each run with a cold cache. Prints medians, the ratio and our peak memory.
Usage: python3 bench/pull_bench.py [--runs 5] [--size-mb 1024] [--work DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import (LocalRegistry, gzip_file, imagegen, measure, median, skopeo_push_layout, split_even,
                    tar_files, usr_files)


def build_image(work: Path, size_mb: int, layers: int) -> Path:
    """An OCI layout of real /usr files in `layers` gzip layers (made once, reused)."""
    layout = work / "layout"
    if (layout / "index.json").exists():
        return layout
    files = usr_files(size_mb * 1024 * 1024)
    blobs = []
    for i, group in enumerate(split_even(files, layers)):
        raw, gz = work / f"layer{i}.tar", work / f"layer{i}.tar.gz"
        tar_files(group, raw)
        gzip_file(raw, gz)
        diff_id = "sha256:" + _sha_file(raw)
        blob = imagegen.Blob(imagegen.LAYER_TYPES["gzip"], b"")
        blobs.append((blob, diff_id, gz))
        raw.unlink()
    # Blobs are big: write them straight into the layout instead of keeping them in memory.
    (layout / "blobs" / "sha256").mkdir(parents=True)
    descs = []
    for blob, diff_id, gz in blobs:
        digest = "sha256:" + _sha_file(gz)
        shutil.move(gz, layout / "blobs" / "sha256" / digest.split(":")[1])
        descs.append(({"mediaType": blob.media_type, "digest": digest, "size": (layout / "blobs/sha256" / digest.split(":")[1]).stat().st_size}, diff_id))
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [d for _, d in descs]}}
    cfg = imagegen.Blob(imagegen.OCI_CONFIG, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": imagegen.OCI_MANIFEST, "config": cfg.descriptor(),
                "layers": [d for d, _ in descs]}
    man = imagegen.Blob(imagegen.OCI_MANIFEST, json.dumps(manifest).encode())
    for b in (cfg, man):
        (layout / "blobs/sha256" / b.digest.split(":")[1]).write_bytes(b.data)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        man.descriptor(annotations={"org.opencontainers.image.ref.name": "bench"})]}))
    return layout


def _sha_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    layout = build_image(work, args.size_mb, args.layers)
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    sizes = [p.stat().st_size for p in (layout / "blobs/sha256").iterdir()]
    reg = LocalRegistry(work / "registry-run").start()
    try:
        skopeo_push_layout(layout, "bench", f"{reg.host}/bench/usr:bench", all_images=False)
        ref = f"{reg.host}/bench/usr@{digest}"
        out = work / "out"
        out.mkdir(exist_ok=True)
        ours, theirs, rss = [], [], []
        for run in range(args.runs):
            for f in out.iterdir():
                f.unlink()
            shutil.rmtree(work / "skopeo-cache", ignore_errors=True)
            t, _ = measure(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                            f"docker://{ref}", f"docker-archive:{out}/skopeo.tar:bench/usr:latest"],
                           env=dict(os.environ, TMPDIR=str(out)))
            theirs.append(t)
            shutil.rmtree(work / "cache", ignore_errors=True)  # cold cache: everything is downloaded
            t, peak = measure([sys.executable, "-m", "registry_tools", "pull", ref, "-o", str(out / "ours.tar"),
                               "-q", "--cache-dir", str(work / "cache")])
            ours.append(t)
            rss.append(peak)
            print(f"run {run + 1}: skopeo {theirs[-1]:.2f}s  registry-tools {ours[-1]:.2f}s  (peak {peak} MB)",
                  flush=True)
        uncompressed = (out / "ours.tar").stat().st_size
        print(f"image: {args.layers} gzip layers, {sum(sizes) / 1e6:.0f} MB compressed, "
              f"{uncompressed / 1e6:.0f} MB docker-archive")
        print(f"median skopeo copy:        {median(theirs):.2f} s")
        print(f"median registry-tools pull: {median(ours):.2f} s   peak RSS {max(rss)} MB")
        print(f"ratio (ours / skopeo):     {median(ours) / median(theirs):.3f}")
    finally:
        reg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
