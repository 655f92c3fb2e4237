"""The sha256 of a path's Nix archive (NAR) serialisation.

A directory output (the OCI layout) is pinned the way Nix pins a recursive
fixed-output derivation, so a hash we print is the hash Nix computes.
"""
from __future__ import annotations

import hashlib
import os
import stat
import struct


def _str(h: "hashlib._Hash", data: bytes) -> None:
    h.update(struct.pack("<Q", len(data)))
    h.update(data)
    pad = (-len(data)) % 8
    if pad:
        h.update(b"\0" * pad)


def _node(h: "hashlib._Hash", path: str) -> None:
    st = os.lstat(path)
    _str(h, b"(")
    _str(h, b"type")
    if stat.S_ISLNK(st.st_mode):
        _str(h, b"symlink")
        _str(h, b"target")
        _str(h, os.fsencode(os.readlink(path)))
    elif stat.S_ISDIR(st.st_mode):
        _str(h, b"directory")
        for name in sorted(os.listdir(path), key=os.fsencode):
            _str(h, b"entry")
            _str(h, b"(")
            _str(h, b"name")
            _str(h, os.fsencode(name))
            _str(h, b"node")
            _node(h, os.path.join(path, name))
            _str(h, b")")
    elif stat.S_ISREG(st.st_mode):
        _str(h, b"regular")
        if st.st_mode & 0o100:
            _str(h, b"executable")
            _str(h, b"")
        _str(h, b"contents")
        h.update(struct.pack("<Q", st.st_size))
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        pad = (-st.st_size) % 8
        if pad:
            h.update(b"\0" * pad)
    else:
        raise ValueError(f"{path}: cannot be put in a Nix archive (not a file, directory or symlink)")
    _str(h, b")")


def nar_sha256(path: str) -> bytes:
    h = hashlib.sha256()
    _str(h, b"nix-archive-1")
    _node(h, path)
    return h.digest()


class _Counting:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)


def nar_sha256_and_size(path: str) -> tuple[bytes, int]:
    """The sha256 and the length of a path's NAR serialisation (what Nix registers as narHash and narSize)."""
    h = _Counting()
    _str(h, b"nix-archive-1")  # type: ignore[arg-type]
    _node(h, path)  # type: ignore[arg-type]
    return h.hash.digest(), h.size
