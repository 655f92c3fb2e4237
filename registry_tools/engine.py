"""The engine's shared parts: progress, the one transfer limit, cancellation, cache repair.

Every operation is a copy from a source to a destination. What every copy needs is
here once: how it reports progress, how many transfers run at once, how it stops, and
what it does when a blob in the cache turns out damaged (evict it, fetch it again once,
and say so).
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from registry_tools.errors import CacheDamaged
from registry_tools.model.digest import Digest
from registry_tools.store.cache import BlobCache

log = logging.getLogger("registry_tools.engine")

DEFAULT_CONCURRENCY = 4
T = TypeVar("T")


class Progress:
    """Progress callbacks; the CLI supplies a real one."""

    def start(self, total: int, count: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def blob_done(self, digest: Digest, size: int, cached: bool) -> None: ...

    def finish(self) -> None: ...

    def say(self, message: str) -> None:
        """One line of news (a layer packed, a blob pushed, cache damage); silent unless the CLI shows it."""


def repairing(cache: BlobCache, run: Callable[[], T]) -> T:
    """Run an operation; if it finds a damaged blob in the cache, evict it and run it once more.

    The operation writes nothing before it succeeds, so running it again is safe; the
    blob is fetched (or packed) again on the second run. Damage found twice is reported.
    """
    try:
        return run()
    except CacheDamaged as e:
        cache.evict(e.digest)  # type: ignore[arg-type]
        message = f"the cache held a damaged copy of {e.digest} ({e.reason}); removed it, fetching it again"
        log.warning("%s", message)
    return run()
