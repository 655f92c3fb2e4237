"""What one operation shares: registry connections, the blob cache, its workers and progress."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from registry_tools.cancel import Cancel
from registry_tools.registry import auth
from registry_tools.store.cache import BlobCache
from registry_tools.registry.client import Registry, RetryPolicy, TransportOptions
from registry_tools.registry.credentials import CredentialStore
from registry_tools.engine import Progress
from registry_tools.registry.ranges import PARTS
from registry_tools.registry.sink import Sending
from registry_tools.registry.source import RegistrySource
from registry_tools.store.blobs import BlobStore
from registry_tools.model.reference import Reference
from registry_tools.workers import JOBS, Workers


@dataclass
class Session:
    cache_dir: str | None = None
    transport: TransportOptions = field(default_factory=TransportOptions)
    credentials: auth.CredentialLookup | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = JOBS
    range_parts: int = PARTS  # a big blob's parallel ranges (1: one connection per blob)
    progress: Progress = field(default_factory=Progress)

    def __post_init__(self) -> None:
        if self.credentials is None:
            self.credentials = CredentialStore()
        self.cache = BlobCache(self.cache_dir)
        self.store = BlobStore(self.cache)
        self.cancel = Cancel()  # one per operation: Ctrl-C or a failure stops every request and wait
        # One pool and one limit on blob transfers for everything this session does (a lock file
        # resolves several images at once, each with its downloads: together they stay within it).
        self.workers = Workers(self.concurrency, self.cancel)
        self.sending = Sending()  # a blob two of its pushes share goes to a registry once
        self._registries: dict[str, Registry] = {}
        self._lock = threading.Lock()

    def registry(self, domain: str) -> Registry:
        with self._lock:
            reg = self._registries.get(domain)
            if reg is None:
                reg = Registry(domain, options=self.transport, credentials=self.credentials, retry=self.retry,
                               cancel=self.cancel)
                self._registries[domain] = reg
            return reg

    def source(self, ref: Reference) -> RegistrySource:
        return RegistrySource(self.registry(ref.domain), ref.path, self.store, self.workers, self.progress,
                              self.range_parts)

    def close(self) -> None:
        self.cancel.set("the session was closed")
        self.workers.close()
        for reg in self._registries.values():
            reg.close()
        self._registries.clear()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def using(session: Session | None) -> Iterator[Session]:
    """The caller's session, or one of the operation's own, closed when it ends."""
    if session is not None:
        yield session
        return
    with Session() as own:
        yield own
