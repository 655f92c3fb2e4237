"""sync: mirror exactly the digests a lock pins, and write the mirror's lock.

Each pinned image (an index with all its platforms, as pinned) is copied to the same
repository path under the mirror, REGISTRY[/PREFIX]. A pull's output depends only on the
digest, platform, final name and tag and format, so the mirror's lock is the same pins
with imageName changed, and every `hash` in it stays valid. An image the mirror has
already costs one manifest HEAD.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from registry_tools.api.lock import LockEntry
from registry_tools.engine import Progress, copy_tree
from registry_tools.errors import InvalidReference, RateLimitLow, RegistryToolsError, UsageError
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.registry.destination import RegistryDestination
from registry_tools.registry.remote import RegistryTree
from registry_tools.registry.sink import PushResult
from registry_tools.registry.source import RegistrySource
from registry_tools.session import Session
from registry_tools.workers import JOBS

log = logging.getLogger("registry_tools.sync")


@dataclass
class SyncItem:
    """One image to mirror: every lock entry that pins the same digest to the same place."""

    source: refs.Reference  # name@digest
    dest: refs.Reference  # name only
    tags: list[str]
    entries: list[LockEntry] = field(default_factory=list)
    pushed: PushResult | None = None
    up_to_date: bool = False
    error: RegistryToolsError | None = None

    @property
    def digest(self) -> Digest:
        return Digest.parse(self.source.digest or "")

    def describe(self) -> str:
        tags = ", ".join(self.tags) if self.tags else "by digest"
        return f"{self.source.name}@{self.digest} -> {self.dest.name} ({tags})"


def mirror_name(image_name: str, to: str) -> str:
    """docker.io/library/alpine under mirror.example/hub: mirror.example/hub/library/alpine."""
    return f"{to.rstrip('/')}/{refs.parse_normalized(image_name).path}"


def check_target(to: str) -> str:
    host = to.split("/", 1)[0]
    if not host or not ("." in host or ":" in host or host == "localhost"):
        raise UsageError(f"the mirror {to!r} must start with a registry host (e.g. mirror.example/hub or "
                         "localhost:5000)")
    try:
        refs.parse_normalized(f"{to.rstrip('/')}/x")  # a tag or digest in it makes this invalid too
    except InvalidReference:
        raise UsageError(f"the mirror {to!r} is not a registry and path (REGISTRY[/PREFIX], no tag or digest)") \
            from None
    return to.rstrip("/")


def plan(entries: list[LockEntry], to: str) -> list[SyncItem]:
    """What to copy where, decided from the lock alone (nothing is sent)."""
    to = check_target(to)
    items: dict[tuple[str, Digest], SyncItem] = {}
    origin_of: dict[str, str] = {}
    for e in entries:
        name = mirror_name(e.image_name, to)
        first = origin_of.setdefault(name, e.image_name)
        if first != e.image_name:
            raise UsageError(f"line {e.line}: {e.image_name} and {first} would both be mirrored to {name}")
        typed = refs.parse_normalized(e.reference)
        tag = typed.tag or ("" if typed.digest else "latest")
        key = (name, e.image_digest)
        item = items.get(key)
        if item is None:
            item = items[key] = SyncItem(refs.parse_normalized(f"{e.image_name}@{e.image_digest}"),
                                         refs.parse_normalized(name), [])
        if tag and tag not in item.tags:
            item.tags.append(tag)
        item.entries.append(e)
    return list(items.values())


def mirror_lock(entries: list[LockEntry], to: str) -> list[LockEntry]:
    to = check_target(to)
    return [e.renamed(mirror_name(e.image_name, to)) for e in entries]


def copy_item(item: SyncItem, session: Session, progress: Progress) -> None:
    """One image: a HEAD per tag (or one by digest) when it is there already, else the whole tree."""
    source = RegistrySource(session.registry(item.source.domain), item.source.path, session.store, session.workers,
                            progress)
    done = copy_tree(RegistryTree(source, None, item.digest),
                     RegistryDestination(session, item.dest, item.tags, progress=progress), session.cache)
    item.up_to_date = done.up_to_date
    item.pushed = None if done.up_to_date else done.result


def sync(items: list[SyncItem], session: Session, *, jobs: int = JOBS, keep_going: bool = False,
         progress_of: Callable[[SyncItem], Progress] | None = None,
         done: Callable[[SyncItem], None] | None = None) -> list[SyncItem]:
    """Copy every item (`jobs` at a time). Without `keep_going` the first failure stops the rest;
    with it every item is tried and the failures are in their `error`. A rate limit about to
    run out stops the sync either way (the next requests would fail too)."""
    def one(item: SyncItem) -> None:
        try:
            copy_item(item, session, progress_of(item) if progress_of else Progress())
        except RateLimitLow:
            raise
        except RegistryToolsError as e:
            item.error = e
            if not keep_going:
                raise
        finally:
            if done is not None:
                done(item)

    group = session.workers.group(jobs)  # the images; their transfers share the session's one limit
    for item in items:
        group.submit(one, item)
    try:
        group.join()  # the first failure at once
    except BaseException:
        session.cancel.set("the sync stopped")
        raise
    return items
