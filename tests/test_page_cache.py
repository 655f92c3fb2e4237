"""What a written archive leaves in the page cache: `fileio.page_cache_room` (the dirty limit, and
a memory cgroup's headroom) and the archive writer's write-behind. An archive that fits in the
room stays in the page cache for the kernel to write back in its own time; one planned beyond
it is written behind and dropped as the output's hash passes it (docs/performance.md)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from registry_tools.fileio import page_cache_room
from registry_tools.formats import tar

MiB = 1 << 20
GiB = 1 << 30


def machine(tmp_path: Path, available: int = 10 * GiB, dirty_ratio: int = 20, dirty_bytes: int = 0,
            cgroup: str = "0::/\n") -> tuple[Path, Path]:
    """A /proc and a /sys/fs/cgroup of a machine with `available` bytes of available memory."""
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "sys/vm").mkdir(parents=True)
    (proc / "self").mkdir()
    cgroups.mkdir()
    (proc / "meminfo").write_text(f"MemTotal:       {2 * available // 1024} kB\nMemFree:         1024 kB\n"
                                  f"MemAvailable:   {available // 1024} kB\nCached:          2048 kB\n")
    (proc / "sys/vm/dirty_ratio").write_text(f"{dirty_ratio}\n")
    (proc / "sys/vm/dirty_bytes").write_text(f"{dirty_bytes}\n")
    (proc / "self/cgroup").write_text(cgroup)
    return proc, cgroups


def group(root: Path, path: str, files: dict[str, str]) -> None:
    d = root / path
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_the_room_is_the_dirty_limit_of_the_available_memory(tmp_path):
    proc, cgroups = machine(tmp_path, available=10 * GiB, dirty_ratio=20)
    assert page_cache_room(proc, cgroups) == 2 * GiB


def test_a_dirty_limit_in_bytes_wins_over_the_ratio(tmp_path):
    proc, cgroups = machine(tmp_path, dirty_bytes=256 * MiB)
    assert page_cache_room(proc, cgroups) == 256 * MiB


def test_a_cgroup_v2_limit_leaves_what_is_left_under_it(tmp_path):
    """What the cgroup uses, less the page cache it can drop at once (inactive files), counts."""
    proc, cgroups = machine(tmp_path, cgroup="0::/ci/job\n")
    group(cgroups, "ci/job", {"memory.max": f"{GiB}\n", "memory.current": f"{400 * MiB}\n",
                              "memory.stat": f"anon {300 * MiB}\ninactive_file {100 * MiB}\n"})
    assert page_cache_room(proc, cgroups) == GiB - 400 * MiB + 100 * MiB


def test_a_parent_cgroups_limit_counts_where_its_own_has_none(tmp_path):
    proc, cgroups = machine(tmp_path, cgroup="0::/kubepods/pod1/ctr\n")
    group(cgroups, "kubepods/pod1/ctr", {"memory.max": "max\n", "memory.current": f"{50 * MiB}\n"})
    group(cgroups, "kubepods/pod1", {"memory.max": f"{512 * MiB}\n", "memory.current": f"{100 * MiB}\n"})
    assert page_cache_room(proc, cgroups) == 412 * MiB


def test_a_cgroup_v1_limit_counts_and_an_unlimited_one_does_not(tmp_path):
    proc, cgroups = machine(tmp_path, cgroup="5:devices:/\n4:memory:/limited\n0::/\n")
    group(cgroups, "memory", {"memory.limit_in_bytes": "9223372036854771712\n",
                              "memory.usage_in_bytes": f"{3 * GiB}\n"})
    group(cgroups, "memory/limited", {"memory.limit_in_bytes": f"{768 * MiB}\n",
                                      "memory.usage_in_bytes": f"{550 * MiB}\n",
                                      "memory.stat": f"cache {500 * MiB}\ntotal_inactive_file {380 * MiB}\n"})
    assert page_cache_room(proc, cgroups) == 768 * MiB - 550 * MiB + 380 * MiB


def test_a_cgroup_over_its_limit_leaves_no_room(tmp_path):
    proc, cgroups = machine(tmp_path, cgroup="0::/full\n")
    group(cgroups, "full", {"memory.max": f"{100 * MiB}\n", "memory.current": f"{120 * MiB}\n"})
    assert page_cache_room(proc, cgroups) == 0


def test_lines_of_proc_self_cgroup_it_cannot_read_are_passed_over(tmp_path):
    proc, cgroups = machine(tmp_path, available=10 * GiB, cgroup="garbage\n\n0::/job\n")
    group(cgroups, "job", {"memory.max": f"{GiB}\n", "memory.current": "0\n"})
    assert page_cache_room(proc, cgroups) == GiB


def test_a_system_that_does_not_say_gives_no_room(tmp_path):
    assert page_cache_room(tmp_path / "nothing", tmp_path / "nothing") is None


def test_the_running_machine_gives_a_room_on_linux():
    room = page_cache_room()
    assert room is None or room >= 0
    if Path("/proc/meminfo").exists():
        assert room is not None


@pytest.fixture
def advice(monkeypatch):
    """Every write-behind advice the archive writer gives, with 1 MiB steps."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(tar, "WRITE_BEHIND", MiB)
    monkeypatch.setattr(tar, "drop_cached", lambda fd, start=0, length=0: calls.append((start, length)))
    return calls


def write(tmp_path: Path, monkeypatch, room: int | None) -> bytes:
    """A 24 MiB archive, written as a pull writes it, on a machine with this page cache room."""
    monkeypatch.setattr(tar, "page_cache_room", lambda: room)
    entries = [tar.file(f"part{i:02}", bytes([i]) * MiB) for i in range(24)]
    path = tmp_path / f"out-{room}.tar"
    with open(path, "w+b") as f:  # the hash reads back what it cannot take from memory
        digest = tar.write_positional(entries, None, f.fileno())  # type: ignore[arg-type]
    stream = hashlib.sha256()
    tar.write_stream(entries, None, stream.update)  # type: ignore[arg-type]
    assert digest == stream.digest() == hashlib.sha256(path.read_bytes()).digest()
    return digest


@pytest.mark.parametrize("room", [GiB, 30 * MiB])
def test_an_archive_that_fits_is_left_in_the_page_cache(tmp_path, monkeypatch, advice, room):
    write(tmp_path, monkeypatch, room)
    assert advice == []


@pytest.mark.parametrize("room", [20 * MiB, 0, None])
def test_an_archive_beyond_the_room_is_written_behind_from_its_start(tmp_path, monkeypatch, advice, room):
    """Beyond the room (or where it is unknown), every byte the hash passed is written behind, in
    steps that follow each other from the start (and are dropped again, clean, a few steps later)."""
    write(tmp_path, monkeypatch, room)
    assert advice, "nothing was written behind"
    ranges = sorted(set(advice))
    assert ranges[0][0] == 0
    assert all(start + length == following for (start, length), (following, _) in zip(ranges, ranges[1:], strict=False))
    assert ranges[-1][0] + ranges[-1][1] > 22 * MiB
    if room is None:  # nothing kept: the first step is the first megabyte's
        assert advice[0][1] <= 2 * MiB


def test_an_output_the_hash_cannot_read_back_fails_the_write(tmp_path):
    """A failed read-back is an error, never the hash of what was read until then."""
    entries = [tar.file(f"part{i:02}", bytes([i]) * tar._Region.KEEP) for i in range(3)]
    with open(tmp_path / "out.tar", "wb") as f, pytest.raises(OSError):  # write-only: pread fails
        tar.write_positional(entries, None, f.fileno())  # type: ignore[arg-type]
