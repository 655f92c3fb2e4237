"""What a written archive does with the page cache (formats.tar's write-behind): while the
archive is being written, what the output's hash has passed is written behind and dropped,
so its pages are reused; once every byte is written, what the hash still reads is left
alone (docs/performance.md). And the hash fails the write when it cannot read the output."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from registry_tools.formats import tar

MiB = 1 << 20


@pytest.fixture
def advice(monkeypatch):
    """Every write-behind advice the archive writer gives, with 1 MiB steps."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(tar, "WRITE_BEHIND", MiB)
    monkeypatch.setattr(tar, "drop_cached", lambda fd, start=0, length=0: calls.append((start, length)))
    return calls


def written(tmp_path: Path, size: int) -> tuple[int, bytes]:
    """A file of `size` bytes, open for reading and writing, and its bytes."""
    data = bytes(i % 251 for i in range(size))
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, data, 0)
    return fd, data


def test_while_the_archive_is_written_what_the_hash_passed_is_written_behind(tmp_path, advice):
    fd, data = written(tmp_path, 24 * MiB)
    hasher = tar._OrderedHasher(fd)
    region = hasher.region(0, len(data))
    region.advance(len(data))  # written, and more to come: the writer is still at work
    deadline = time.monotonic() + 10
    while hasher._behind < 22 * MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hasher.close() == hashlib.sha256(data).digest()
    os.close(fd)
    steps = sorted(set(advice))  # each dirty step, then (two steps later) the same range again, clean
    assert steps[0][0] == 0
    assert all(start + length == following for (start, length), (following, _) in zip(steps, steps[1:], strict=False))
    assert steps[-1][0] + steps[-1][1] >= 22 * MiB


def test_once_every_byte_is_written_what_the_hash_still_reads_is_left_alone(tmp_path, advice):
    """The hash's last stretch (the layers after a big first one) is all the write still waits
    for; pages freed then would go to no write."""
    fd, data = written(tmp_path, 24 * MiB)
    hasher = tar._OrderedHasher(fd)
    region = hasher.region(0, len(data))
    with hasher._cond:  # every writer has finished: close() is on its way
        hasher._closed = True
    region.finish()
    assert hasher.close() == hashlib.sha256(data).digest()
    os.close(fd)
    assert advice == []


def test_a_written_archive_hashes_as_its_stream_does(tmp_path, advice):
    entries = [tar.file(f"part{i:02}", bytes([i]) * MiB) for i in range(24)]
    with open(tmp_path / "out.tar", "w+b") as f:  # the hash reads back what it cannot take from memory
        digest = tar.write_positional(entries, None, f.fileno())  # type: ignore[arg-type]
    stream = hashlib.sha256()
    tar.write_stream(entries, None, stream.update)  # type: ignore[arg-type]
    assert digest == stream.digest() == hashlib.sha256((tmp_path / "out.tar").read_bytes()).digest()


def test_an_output_the_hash_cannot_read_back_fails_the_write(tmp_path):
    """A failed read-back is an error, never the hash of what was read until then."""
    entries = [tar.file(f"part{i:02}", bytes([i]) * tar._Region.KEEP) for i in range(3)]
    with open(tmp_path / "out.tar", "wb") as f, pytest.raises(OSError):  # write-only: pread fails
        tar.write_positional(entries, None, f.fileno())  # type: ignore[arg-type]
