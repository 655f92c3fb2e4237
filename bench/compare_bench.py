"""Before and after: this checkout against an earlier one, alternating, in the same run.

Pull (the two images of pull_bench; `skopeo copy docker://…@DIGEST docker-archive:` runs
in the same rounds and both checkouts' ratios to it are printed); build --push, cold and
warm (one small file changed), of the tree of push_bench; and build --oci of that tree
(cold cache). Each run uses a cold cache and
a fresh registry for each tool. Prints medians and the ratios (this checkout / baseline).
Usage: git worktree add /tmp/baseline <commit>
       python3 bench/compare_bench.py --baseline /tmp/baseline [--runs 3]
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
from common import LocalRegistry, as_installed, measure, median, skopeo_push_layout
from pull_bench import build_image

HERE = str(Path(__file__).resolve().parents[1])


def tool(checkout: str, *args: str) -> tuple[float, int]:
    """One registry-tools command from a checkout (its package first on the path)."""
    return measure([sys.executable, "-m", "registry_tools", *args], env=dict(os.environ, PYTHONPATH=checkout))


def pulls(work: Path, runs: int, impls: dict[str, str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    reg = LocalRegistry(work / "registry-run").start()
    try:
        refs = {}
        for shape in ("even", "dominant"):
            layout = build_image(work, 1024, shape)
            digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
            skopeo_push_layout(layout, "bench", f"{reg.host}/bench/{shape}:bench", all_images=False)
            refs[shape] = f"{reg.host}/bench/{shape}@{digest}"
        out = work / "out"
        out.mkdir(exist_ok=True)
        for run in range(runs):
            for shape, ref in refs.items():
                for name in (*impls, "skopeo"):
                    for f in out.iterdir():
                        f.unlink()
                    shutil.rmtree(work / "cache", ignore_errors=True)
                    if name == "skopeo":
                        t, _ = measure(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                                        f"docker-archive:{out}/o.tar:bench/usr:latest"],
                                       env=dict(os.environ, TMPDIR=str(out)))
                    else:
                        t, _ = tool(impls[name], "pull", ref, "-o", str(out / "o.tar"), "-q",
                                    "--cache-dir", str(work / "cache"))
                    times.setdefault(f"pull {shape} {name}", []).append(t)
                    print(f"run {run + 1} pull {shape} {name}: {t:.2f}s", flush=True)
    finally:
        reg.stop()
    return times


def pushes(work: Path, runs: int, impls: dict[str, str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    paths, _ = bench_tree(1100)
    small = work / "small"
    small.mkdir(exist_ok=True)
    paths.append({"source": str(small), "target": "/etc/app"})
    (work / "spec.json").write_text(json.dumps({"name": "bench/usr", "tag": "bench", "paths": paths}))
    for run in range(runs):
        for name, checkout in impls.items():
            (small / "version").write_text("1\n")
            shutil.rmtree(work / "cache", ignore_errors=True)
            shutil.rmtree(work / "reg", ignore_errors=True)
            reg = LocalRegistry(work / "reg").start()
            try:
                args = ["build", str(work / "spec.json"), "--push", f"{reg.host}/bench/usr:bench", "-q",
                        "--cache-dir", str(work / "cache")]
                cold, _ = tool(checkout, *args)
                (small / "version").write_text("2\n")
                warm, _ = tool(checkout, *args)
            finally:
                reg.stop()
            shutil.rmtree(work / "cache", ignore_errors=True)
            shutil.rmtree(work / "layout", ignore_errors=True)
            built, _ = tool(checkout, "build", str(work / "spec.json"), "--oci", str(work / "layout"), "-q",
                            "--cache-dir", str(work / "cache"))
            times.setdefault(f"push cold {name}", []).append(cold)
            times.setdefault(f"push warm {name}", []).append(warm)
            times.setdefault(f"build {name}", []).append(built)
            print(f"run {run + 1} push {name}: cold {cold:.2f}s warm {warm:.2f}s; build --oci {built:.2f}s",
                  flush=True)
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="a checkout of the earlier commit")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "registry-tools-bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    impls = {"baseline": as_installed(args.baseline), "this": as_installed(HERE)}  # both compiled, as installed
    times = pulls(work, args.runs, impls)
    times.update(pushes(work / "push", args.runs, impls) if (work / "push").mkdir(exist_ok=True) is None else {})
    for what in ("pull even", "pull dominant", "build", "push cold", "push warm"):
        base, this = median(times[f"{what} baseline"]), median(times[f"{what} this"])
        line = f"{what:14}: baseline {base:.2f} s, this {this:.2f} s, ratio {this / base:.3f}"
        if f"{what} skopeo" in times:
            peer = median(times[f"{what} skopeo"])
            line += f"; skopeo {peer:.2f} s, to skopeo: baseline {base / peer:.3f}, this {this / peer:.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
