"""Benchmark helpers: real files from /usr as image content, a local registry, timing of child processes."""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from isal import igzip

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import imagegen  # noqa: E402
from tests.support.peakmem import PeakWatcher  # noqa: E402
from tests.support.registry import LocalRegistry, skopeo_push_layout  # noqa: E402


def usr_files(limit_bytes: int, roots=("/usr/lib", "/usr/share", "/usr/bin", "/usr/include")) -> list[Path]:
    """Regular files from /usr, in a fixed order, until `limit_bytes` is reached."""
    out, total = [], 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                try:
                    st = p.lstat()
                except OSError:
                    continue
                if not p.is_file() or p.is_symlink() or not os.access(p, os.R_OK) or st.st_size == 0:
                    continue
                out.append(p)
                total += st.st_size
                if total >= limit_bytes:
                    return out
    return out


def split_even(files: list[Path], parts: int) -> list[list[Path]]:
    sizes = [f.stat().st_size for f in files]
    target = sum(sizes) / parts
    groups: list[list[Path]] = [[]]
    acc = 0.0
    for f, s in zip(files, sizes, strict=True):
        if acc >= target and len(groups) < parts:
            groups.append([])
            acc = 0.0
        groups[-1].append(f)
        acc += s
    return groups


def split_weighted(files: list[Path], weights: list[float]) -> list[list[Path]]:
    """Files cut into groups whose sizes follow `weights` (in order; the last takes the rest)."""
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    groups: list[list[Path]] = [[] for _ in weights]
    bounds, acc = [], 0.0
    for w in weights:
        acc += w / sum(weights)
        bounds.append(acc * total)
    done, g = 0, 0
    for f, s in zip(files, sizes, strict=True):
        while g < len(weights) - 1 and done >= bounds[g]:
            g += 1
        groups[g].append(f)
        done += s
    return [grp for grp in groups if grp]


def tar_files(files: list[Path], dest: Path) -> None:
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for f in files:
            info = tf.gettarinfo(str(f), arcname=str(f).lstrip("/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 1, 0, 0, "", ""
            with open(f, "rb") as fh:
                tf.addfile(info, fh)


def gzip_file(src: Path, dest: Path, level: int = 3) -> None:
    with open(src, "rb") as fi, igzip.open(dest, "wb", compresslevel=level) as fo:
        while chunk := fi.read(1 << 20):
            fo.write(chunk)


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one child process.

    Dirty pages left by the previous command are written back first (untimed), so neither
    tool pays for the other's writeback.
    """
    os.sync()
    time.sleep(0.5)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    watcher = PeakWatcher(proc.pid)  # the child's own peak: wait4's ru_maxrss includes ours
    _, err_bytes = proc.communicate()
    wall = time.perf_counter() - t
    peak = watcher.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err_bytes.decode(errors='replace')[-2000:]}")
    return wall, peak // 1024


def as_installed(checkout: str | os.PathLike[str] = ROOT) -> str:
    """A checkout made to start as an installed package does: its modules compiled to bytecode
    (pip compiles them when it installs; run from source with PYTHONDONTWRITEBYTECODE set, each
    start would compile some 60 modules again, about 0.1 s). Returns its path, for PYTHONPATH."""
    path = Path(checkout).resolve()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(path / "registry_tools")], check=True,
                   stdout=subprocess.DEVNULL)
    return str(path)


def run_from_checkout() -> None:
    """Every `python -m registry_tools` this benchmark starts runs this checkout, as installed."""
    os.environ["PYTHONPATH"] = as_installed() + os.pathsep + os.environ.get("PYTHONPATH", "")


def median(xs: list[float]) -> float:
    return statistics.median(xs)


__all__ = ["LocalRegistry", "imagegen", "skopeo_push_layout", "usr_files", "split_even", "split_weighted", "tar_files",
           "gzip_file", "measure", "median", "resource", "ROOT", "as_installed", "run_from_checkout"]
