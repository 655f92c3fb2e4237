"""pull benchmark: two ~1 GiB images pulled to docker-archive by skopeo and by us.

"even": 5 gzip layers of about the same size. "dominant": one gzip layer holds 65% of
the bytes and four small ones the rest, as most real images are shaped. Both tools pull
the same digest from the same local registry, alternating (skopeo, ours, for each image
in turn), N runs each, each run with a cold cache. Prints medians, the ratio and our
peak memory per image.
Usage: python3 bench/pull_bench.py [--runs 5] [--size-mb 1024] [--work DIR] [--images even,dominant]
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

from common import (LocalRegistry, gzip_file, imagegen, measure, median, run_from_checkout, skopeo_push_layout,
                    split_weighted, tar_files, usr_files)

SHAPES = {"even": [1, 1, 1, 1, 1], "dominant": [65, 10, 10, 10, 5]}


def build_image(work: Path, size_mb: int, shape: str) -> Path:
    """An OCI layout of real /usr files in gzip layers shaped by SHAPES[shape] (made once, reused)."""
    layout = work / ("layout" if shape == "even" else f"layout-{shape}")
    if (layout / "index.json").exists():
        return layout
    files = usr_files(size_mb * 1024 * 1024)
    blobs = []
    for i, group in enumerate(split_weighted(files, SHAPES[shape])):
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
    run_from_checkout()  # from anywhere, as installed
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--images", default="even,dominant")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shapes = args.images.split(",")
    layouts = {s: build_image(work, args.size_mb, s) for s in shapes}
    reg = LocalRegistry(work / "registry-run").start()
    try:
        refs = {}
        for shape, layout in layouts.items():
            digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
            skopeo_push_layout(layout, "bench", f"{reg.host}/bench/{shape}:bench", all_images=False)
            refs[shape] = f"{reg.host}/bench/{shape}@{digest}"
        out = work / "out"
        out.mkdir(exist_ok=True)
        ours: dict[str, list[float]] = {s: [] for s in shapes}
        theirs: dict[str, list[float]] = {s: [] for s in shapes}
        rss: dict[str, list[int]] = {s: [] for s in shapes}
        for run in range(args.runs):
            for shape in shapes:
                ref = refs[shape]
                for f in out.iterdir():
                    f.unlink()
                t, _ = measure(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                f"docker://{ref}", f"docker-archive:{out}/skopeo.tar:bench/usr:latest"],
                               env=dict(os.environ, TMPDIR=str(out)))
                theirs[shape].append(t)
                for f in out.iterdir():  # each tool starts from an empty output directory
                    f.unlink()
                shutil.rmtree(work / "cache", ignore_errors=True)  # cold cache: everything is downloaded
                t, peak = measure([sys.executable, "-m", "registry_tools", "pull", ref, "-o", str(out / "ours.tar"),
                                   "-q", "--cache-dir", str(work / "cache")])
                ours[shape].append(t)
                rss[shape].append(peak)
                print(f"run {run + 1} {shape:8}: skopeo {theirs[shape][-1]:.2f}s  registry-tools {t:.2f}s  "
                      f"(peak {peak} MB)", flush=True)
        for shape in shapes:
            blobs = sorted((p.stat().st_size for p in (layouts[shape] / "blobs/sha256").iterdir()), reverse=True)
            print(f"{shape}: {sum(blobs) / 1e6:.0f} MB compressed, largest layer {blobs[0] / sum(blobs):.0%}; "
                  f"skopeo {median(theirs[shape]):.2f} s, registry-tools {median(ours[shape]):.2f} s "
                  f"(peak RSS {max(rss[shape])} MB), ratio {median(ours[shape]) / median(theirs[shape]):.3f}")
    finally:
        reg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
