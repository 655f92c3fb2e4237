"""prefetch --check / --update: what a lock's tags resolve to now, against what it pins.

Checking costs one manifest HEAD per tag; a line pinned by digest cannot drift. Updating
pins again only the lines whose tag moved (and lines the lock lacks); every other entry
is kept exactly as it was, and entries for lines no longer listed are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry_tools.api.lock import LockEntry
from registry_tools.api.prefetch import LockLine, Pin, prefetch_many
from registry_tools.errors import RegistryToolsError
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.session import Session


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


def check(lines: list[LockLine], entries: list[LockEntry], session: Session, jobs: int = 4) -> list[Drift]:
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


def update(lines: list[LockLine], entries: list[LockEntry], drifts: list[Drift], session: Session,
           jobs: int = 4, format: str = "docker-archive") -> tuple[list[dict[str, Any]], list[tuple[LockLine,
                                                                                                RegistryToolsError]]]:
    """The new lock's entries in the lines' order, and the lines that could not be pinned."""
    by_key = {_key(e.reference, e.platform): e for e in entries}
    stale = {_key(d.line.reference, d.line.platform) for d in drifts}
    repin = [line for line in lines if _key(line.reference, line.platform) in stale]
    pinned = {_key(line.reference, line.platform): r
              for line, r in prefetch_many(repin, session=session, jobs=jobs, format=format)}
    out: list[dict[str, Any]] = []
    failed: list[tuple[LockLine, RegistryToolsError]] = []
    for line in lines:
        key = _key(line.reference, line.platform)
        if key not in stale:
            out.append(by_key[key].data)
            continue
        got = pinned[key]
        if isinstance(got, Pin):
            entry: dict[str, Any] = {"reference": line.reference}
            if line.platform:
                entry["platform"] = line.platform
            entry.update(got.to_dict())
            out.append(entry)
        else:
            failed.append((line, got))
    return out, failed
