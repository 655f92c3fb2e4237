"""Shards of a lock: a stable part of it for each of N processes, and their mirror locks joined.

`sync LOCK DEST --shard I/N` mirrors the entries whose key, imageName and imageDigest,
hashes (sha256) to I modulo N. An entry's shard depends on that entry alone, so adding,
editing or removing one entry moves no other, and the entries that sync to one image (the
same name and digest: the platforms or tags of one index) share a shard. Each shard writes
its part of the mirror lock with a `shard` header saying where each of its entries stood in
LOCK; `lock merge` joins the N parts into the bytes one unsharded `sync` writes, and refuses
parts that are missing, given twice, cut from another lock, or that disagree.

`--shard auto` reads the shard from the environment: `REGISTRY_TOOLS_SHARD` (a CI matrix
passes it), else Kubernetes' `JOB_COMPLETION_INDEX` (an indexed Job), each with
`REGISTRY_TOOLS_SHARDS` (or `auto/N`) for N; else GitLab's `parallel:` (`CI_NODE_INDEX`,
counted from 1, and `CI_NODE_TOTAL`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from registry_tools.api.lock import LockEntry, lock_text, read_lock
from registry_tools.errors import InvalidDigest, UsageError
from registry_tools.model.digest import Digest
from registry_tools.model.manifest import load_json

# where --shard auto finds the shard: (the index's variable, what it counts from, N's variable)
ENVIRONMENT = (("REGISTRY_TOOLS_SHARD", 0, "REGISTRY_TOOLS_SHARDS"),
               ("JOB_COMPLETION_INDEX", 0, "REGISTRY_TOOLS_SHARDS"),
               ("CI_NODE_INDEX", 1, "CI_NODE_TOTAL"))
PIN_FIELDS = ("imageDigest", "manifestDigest", "hash")  # what a pin says of its image, beside what it asks for


@dataclass(frozen=True)
class Shard:
    index: int  # from 0
    count: int

    def holds(self, entry: LockEntry) -> bool:
        return shard_of(entry, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_json(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def shard_of(entry: LockEntry, count: int) -> int:
    """The shard of an entry among `count`: its imageName and imageDigest, hashed."""
    key = f"{entry.image_name}@{entry.image_digest}".encode()
    return int.from_bytes(hashlib.sha256(key).digest(), "big") % count


def _number(text: str, what: str) -> int:
    if not text.isdigit():
        raise UsageError(f"--shard: {what} {text!r} is not a whole number")
    return int(text)


def parse_shard(text: str, environ: Mapping[str, str]) -> Shard:
    """`I/N` (I from 0), `auto` or `auto/N` (the shard from `environ`, as ENVIRONMENT says)."""
    head, slash, tail = text.partition("/")
    if not slash and head != "auto":
        raise UsageError(f"--shard {text!r}: give I/N (I from 0 to N-1), auto or auto/N")
    count = _number(tail, "N") if slash else None
    if head == "auto":
        index, count = _from_environment(environ, count)
    else:
        index = _number(head, "I")
    if count is None or count < 1 or index >= count:
        raise UsageError(f"--shard {index}/{count}: a shard from 0 to N-1 of N (at least 1)")
    return Shard(index, count)


def _from_environment(environ: Mapping[str, str], count: int | None) -> tuple[int, int | None]:
    for name, base, count_name in ENVIRONMENT:
        if name not in environ:
            continue
        index = _number(environ[name], name) - base
        if index < 0:
            raise UsageError(f"--shard auto: {name}={environ[name]} counts from {base}")
        given = environ.get(count_name)
        if given is not None:
            if count is not None and _number(given, count_name) != count:
                raise UsageError(f"--shard auto/{count}: {count_name} says {given}")
            count = _number(given, count_name)
        if count is None:
            raise UsageError(f"--shard auto: {name} gives the shard; give N as auto/N or {count_name}")
        return index, count
    names = ", ".join(name for name, _, _ in ENVIRONMENT)
    raise UsageError(f"--shard auto: none of {names} is set")


def shard_lock(entries: list[LockEntry], mirrored: list[LockEntry], shard: Shard, lock: Path) -> str:
    """The shard's part of the mirror lock: its entries of `mirrored` (the whole mirror lock, in the
    order of `entries`, the lock's), and where each stood in the lock."""
    positions = [i for i, e in enumerate(entries) if shard.holds(e)]
    header = {**shard.to_json(), "entries": len(entries), "lock": str(Digest.of_bytes(lock.read_bytes())),
              "positions": positions}
    doc = {"version": 1, "shard": header, "images": [mirrored[i].data for i in positions]}
    return json.dumps(doc, indent=2) + "\n"


@dataclass(frozen=True)
class _Part:
    path: str
    entries: list[LockEntry]
    header: dict[str, Any] | None

    def where(self, entry: LockEntry) -> str:
        return f"{self.path}:{entry.line}"


def _header(path: str, entries: int) -> dict[str, Any] | None:
    """The `shard` header of a lock (None without one), checked."""
    doc = load_json(Path(path).read_text(encoding="utf-8"), path, UsageError)
    header = doc.get("shard") if isinstance(doc, dict) else None
    if header is None:
        return None
    wrong = UsageError(f"{path}: a shard header of the wrong shape (sync --shard writes it)")
    if not isinstance(header, dict) or not all(_whole(header.get(k)) for k in ("index", "count", "entries")):
        raise wrong
    positions = header.get("positions")
    if not header["index"] < header["count"] or not isinstance(positions, list) or len(positions) != entries \
            or not all(_whole(p) for p in positions) or not isinstance(header.get("lock"), str):
        raise wrong
    try:
        Digest.parse(header["lock"])
    except InvalidDigest:
        raise wrong from None
    return header


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def merge_locks(paths: list[str]) -> tuple[str, int]:
    """Mirror locks joined: the shards of one sync into what the unsharded sync writes; locks
    without a shard header into one holding each pin once (first seen first). Returns the
    lock's text and its number of entries."""
    parts = []
    for path in paths:
        entries = read_lock(path)
        parts.append(_Part(path, entries, _header(path, len(entries))))
    sharded = [p for p in parts if p.header is not None]
    if sharded and len(sharded) != len(parts):
        plain = next(p for p in parts if p.header is None)
        raise UsageError(f"{sharded[0].path} is a shard's mirror lock and {plain.path} is not: "
                         "merge the shards of one sync, or locks without shards")
    images = _join_shards(parts) if sharded else _join_plain(parts)
    return lock_text(images), len(images)


def _join_shards(parts: list[_Part]) -> list[dict[str, Any]]:
    first = parts[0].header or {}
    seen: dict[int, _Part] = {}
    for p in parts:
        h = p.header or {}
        if (h["count"], h["entries"], h["lock"]) != (first["count"], first["entries"], first["lock"]):
            raise UsageError(f"{p.path} and {parts[0].path} are shards of different syncs (another lock or "
                             "another number of shards)")
        if h["index"] in seen:
            raise UsageError(f"{p.path} and {seen[h['index']].path} are both shard {h['index']}/{h['count']}")
        seen[h["index"]] = p
    missing = [f"{i}/{first['count']}" for i in range(first["count"]) if i not in seen]
    if missing:
        raise UsageError(f"shard {', '.join(missing)} missing: give the mirror lock of every shard")
    slots: dict[int, tuple[_Part, LockEntry]] = {}
    for p in parts:
        for position, entry in zip((p.header or {})["positions"], p.entries, strict=True):
            if position >= first["entries"]:
                raise UsageError(f"{p.where(entry)}: entry {position + 1} of a lock of {first['entries']}")
            if position in slots and slots[position][1].data != entry.data:
                other, theirs = slots[position]
                raise UsageError(f"{p.where(entry)} and {other.where(theirs)} conflict: both entry "
                                 f"{position + 1} of the lock, pinned differently")
            slots[position] = (p, entry)
    if len(slots) != first["entries"]:
        gone = next(i for i in range(first["entries"]) if i not in slots)
        raise UsageError(f"entry {gone + 1} of the lock is in no shard given")
    return [slots[i][1].data for i in range(first["entries"])]


def _join_plain(parts: list[_Part]) -> list[dict[str, Any]]:
    kept: dict[str, tuple[_Part, LockEntry]] = {}
    for p in parts:
        for entry in p.entries:
            key = json.dumps({k: v for k, v in entry.data.items() if k not in PIN_FIELDS}, sort_keys=True)
            if key not in kept:
                kept[key] = (p, entry)
            elif kept[key][1].data != entry.data:
                other, theirs = kept[key]
                raise UsageError(f"{p.where(entry)} and {other.where(theirs)} conflict: {entry.reference} "
                                 f"pinned differently ({entry.image_digest} and {theirs.image_digest})")
    return [entry.data for _, entry in kept.values()]
