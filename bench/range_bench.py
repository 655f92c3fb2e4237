"""pull through a link that caps each connection: parallel ranges against one connection per blob.

An image of real /usr files whose largest gzip layer holds 60% of the bytes (four layers
of 10% beside it) is pulled to a docker-archive from a local registry through
bench/throttle_relay.py, which paces every connection to --rate MB/s (10 by default), by
`skopeo copy docker://…@DIGEST docker-archive:`, by `registry-tools pull` (a big blob in
parallel ranges, the default, on at most --jobs 6 connections: as many as skopeo's six
parallel layer downloads), by the same with --jobs 4 (the default before 6) and by
`registry-tools pull --range-parts 1` (one connection per blob), alternating, N runs each,
every run with a cold cache and an empty output directory. Prints the medians and the ratios to skopeo of the same run.
Usage: python3 bench/range_bench.py [--runs 3] [--size-mb 512] [--rate 10] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pull_bench
from common import LocalRegistry, measure, median, run_from_checkout, skopeo_push_layout

HERE = Path(__file__).resolve().parent
SHAPE = "sixty"
pull_bench.SHAPES[SHAPE] = [60, 10, 10, 10, 10]


def main() -> int:
    run_from_checkout()  # from anywhere, as installed
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=512, help="uncompressed size of the image")
    ap.add_argument("--rate", type=float, default=10.0, help="MB/s per connection through the relay")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-range-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    layout = pull_bench.build_image(work, args.size_mb, SHAPE)
    blobs = sorted((p.stat().st_size for p in (layout / "blobs/sha256").iterdir()), reverse=True)
    reg = LocalRegistry(work / "registry-run").start()
    relay = subprocess.Popen([sys.executable, str(HERE / "throttle_relay.py"), reg.host, "--rate", str(args.rate)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout is not None
        host = f"127.0.0.1:{relay.stdout.readline().strip()}"
        digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        skopeo_push_layout(layout, "bench", f"{reg.host}/bench/{SHAPE}:bench", all_images=False)
        ref = f"{host}/bench/{SHAPE}@{digest}"
        out = work / "out"
        out.mkdir(exist_ok=True)
        ours = [sys.executable, "-m", "registry_tools", "pull", ref, "-o", str(out / "ours.tar"), "-q",
                "--cache-dir", str(work / "cache")]
        tools = {
            "skopeo": ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                       f"docker-archive:{out}/skopeo.tar:bench/usr:latest"],
            "ranges": ours,
            "ranges, jobs 4": [*ours, "--jobs", "4"],
            "one connection": [*ours, "--range-parts", "1"],
        }
        times: dict[str, list[float]] = {name: [] for name in tools}
        for run in range(args.runs):
            for name, cmd in tools.items():
                for f in out.iterdir():  # each tool starts from an empty output directory
                    f.unlink()
                shutil.rmtree(work / "cache", ignore_errors=True)  # cold cache: everything is downloaded
                t, _ = measure(cmd, env=dict(os.environ, TMPDIR=str(out), PYTHONPATH=str(HERE.parent)))
                times[name].append(t)
                print(f"run {run + 1} {name:15}: {t:.2f}s", flush=True)
        base = median(times["skopeo"])
        print(f"{sum(blobs) / 1e6:.0f} MB compressed, largest layer {blobs[0] / sum(blobs):.0%}, "
              f"{args.rate:g} MB/s per connection")
        for name, ts in times.items():
            print(f"{name:15}: median {median(ts):.2f} s, ratio to skopeo {median(ts) / base:.3f}")
    finally:
        relay.terminate()
        relay.wait()
        reg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
