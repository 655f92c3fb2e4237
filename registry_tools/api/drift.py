"""prefetch --check / --update: what a lock's tags resolve to now, against what it pins.

Checking costs one manifest HEAD per tag; a line pinned by digest cannot drift. Updating
pins again only the lines whose tag moved (and lines the lock lacks); every other entry
is kept exactly as it was, and entries for lines no longer listed are dropped. A moved
tag is read again by one GET, its bytes hashed here (a HEAD's digest is only a hint),
and the entry pinned again as the kind it was, in its own format: a layer pin reads the
platform's manifest and config (at most 4 requests an image, the HEAD included, and no
layer), a full pin pulls the whole image to hash the output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry_tools.api.lock import LockEntry
from registry_tools.api.options import split_name
from registry_tools.api.prefetch import AnyPin, LockLine, PrefetchOptions, lock_entry, prefetch, prefetch_layers
from registry_tools.errors import RegistryToolsError
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.registry.source import RegistrySource
from registry_tools.session import Session
from registry_tools.workers import JOBS


@dataclass(frozen=True)
class Drift:
    line: LockLine
    entry: LockEntry | None  # None: the lock has no entry for this line
    now: Digest | None  # what the tag resolves to now (None: the lookup failed, see `error`)
    error: RegistryToolsError | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.line.reference}: {self.error}"
        if self.entry is None:
            return f"{self.line.reference}: not in the lock (now {self.now})"
        return f"{self.line.reference}: locked {self.entry.data['imageDigest']}, now {self.now}"


def _key(reference: str, platform: str | None) -> tuple[str, str]:
    return reference, platform or ""


def check(lines: list[LockLine], entries: list[LockEntry], session: Session, jobs: int = JOBS) -> list[Drift]:
    """Every line whose tag now resolves to another digest than its lock entry (or has none)."""
    by_key = {_key(e.reference, e.platform): e for e in entries}

    def one(line: LockLine) -> Drift | None:
        entry = by_key.get(_key(line.reference, line.platform))
        try:
            ref = refs.parse_normalized(line.reference)
            now = Digest.parse(ref.digest) if ref.digest else \
                session.source(ref).resolve_tag(ref.tag or "latest", cheap=True)  # one HEAD: a comparison
        except RegistryToolsError as e:
            return Drift(line, entry, None, e)
        if entry is not None and entry.image_digest == now:
            return None
        return Drift(line, entry, now)

    with session.workers.group(jobs) as group:
        futures = [group.submit(one, line) for line in lines]
    return [d for f in futures if (d := f.result()) is not None]


@dataclass
class Update:
    """The new lock's entries in the lines' order, what was pinned again (and how), and the lines
    that could not be."""

    entries: list[dict[str, Any]]
    repinned: list[tuple[LockLine, AnyPin]]
    failed: list[tuple[LockLine, RegistryToolsError]]


def tag_now(source: RegistrySource, tag: str) -> Digest:
    """What a tag names now, by the bytes of one GET (hashed here and cached, so the manifest is not
    fetched again by digest): the HEAD before it said the tag moved, and a HEAD's digest is a hint."""
    raw, _ = source.registry.get_manifest(source.repo, tag)
    digest = Digest.of_bytes(raw)
    source.store.cache.put_bytes(digest, raw)
    return digest


def _repin(line: LockLine, entry: LockEntry | None, layers: bool, format: str, session: Session) -> AnyPin | None:
    """The line pinned again as `entry` was (None: its tag names what the entry pins after all)."""
    name, tag, typed_digest = split_name(line.reference)
    if typed_digest:
        digest = Digest.parse(typed_digest)
    else:
        digest = tag_now(session.source(refs.parse_normalized(line.reference)), tag or "latest")
    if entry is not None and entry.image_digest == digest:
        return None
    options = PrefetchOptions(name, str(digest), platform=line.platform, final_image_tag=tag or None, format=format)
    return (prefetch_layers if layers else prefetch)(options, session)


@dataclass(frozen=True)
class NewPins:
    """How a line the lock lacks is pinned (an entry it has keeps its own kind and format)."""

    format: str = "docker-archive"
    layers: bool = False


def update(lines: list[LockLine], entries: list[LockEntry], drifts: list[Drift], session: Session,
           jobs: int = JOBS, new: NewPins = NewPins()) -> Update:
    """Pin again the lines `drifts` names, each entry as the kind and format it was (a line the
    lock lacks: as `new` says); every other entry kept as it is."""
    by_key = {_key(e.reference, e.platform): e for e in entries}
    stale = {_key(d.line.reference, d.line.platform) for d in drifts}
    repin = [line for line in lines if _key(line.reference, line.platform) in stale]

    def one(line: LockLine) -> AnyPin | None | RegistryToolsError:
        entry = by_key.get(_key(line.reference, line.platform))
        try:
            return _repin(line, entry, entry.layers if entry else new.layers,
                          entry.format if entry else new.format, session)
        except RegistryToolsError as e:
            return e

    with session.workers.group(jobs) as group:
        futures = {_key(line.reference, line.platform): group.submit(one, line) for line in repin}
    done = Update([], [], [])
    for line in lines:
        key = _key(line.reference, line.platform)
        got = futures[key].result() if key in futures else None
        if isinstance(got, RegistryToolsError):
            done.failed.append((line, got))
        elif got is None:
            done.entries.append(by_key[key].data)
        else:
            done.entries.append(lock_entry(line, got))
            done.repinned.append((line, got))
    return done
