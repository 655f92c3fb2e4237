"""A content-addressed blob cache shared by every command.

Blobs are stored under their digest only after they were verified, so anything found
here can be used without asking the registry again; small JSON facts about a layer
(its diff_id and uncompressed size) sit beside it so they are computed once.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from registry_tools.model.digest import Digest
from registry_tools.errors import ManifestError
from registry_tools.fileio import replacing, write_json_atomic

ENV_VAR = "REGISTRY_TOOLS_CACHE"


def default_cache_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "registry-tools"


class BlobCache:
    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self._blobs = self.root / "blobs" / "sha256"
        self._meta = self.root / "meta" / "sha256"
        self._tmp = self.root / "tmp"
        self._layers = self.root / "layers"
        self._sources = self.root / "sources" / "sha256"
        for d in (self._blobs, self._meta, self._tmp, self._layers, self._sources):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: Digest) -> Path:
        return self._blobs / digest.hex

    def has(self, digest: Digest, size: int | None = None) -> bool:
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def touch(self, digest: Digest) -> None:
        """Mark a blob as used now, so pruning keeps what is in use (least recently used goes first)."""
        try:
            os.utime(self.path(digest))
        except OSError:
            pass

    def usage(self) -> tuple[int, int]:
        """(number of blobs, bytes they take)."""
        count = total = 0
        for entry in os.scandir(self._blobs):
            if entry.is_file(follow_symlinks=False):
                count += 1
                total += entry.stat(follow_symlinks=False).st_size
        return count, total

    def prune(self, max_bytes: int | None = None, older_than: float | None = None) -> tuple[int, int]:
        """Remove blobs unused for `older_than` seconds, then least recently used ones until the
        blobs fit in `max_bytes`. Returns (blobs removed, bytes freed). Builds and pulls simply
        fetch or pack again what is gone: nothing refers to a blob without checking it is here."""
        import time

        entries = []
        for entry in os.scandir(self._blobs):
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                entries.append((st.st_mtime, st.st_size, entry.name))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        now = time.time()
        removed = freed = 0
        for mtime, size, name in entries:
            too_old = older_than is not None and now - mtime > older_than
            too_big = max_bytes is not None and total - freed > max_bytes
            if not (too_old or too_big):
                continue
            for p in (self._blobs / name, self._meta / f"{name}.json", self._sources / f"{name}.json"):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
            removed += 1
            freed += size
        for stale in self._tmp.iterdir():  # leftovers of interrupted runs, once they are old
            if now - stale.stat().st_mtime > 24 * 3600:
                stale.unlink(missing_ok=True)
        return removed, freed

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)

    def read_bytes(self, digest: Digest) -> bytes:
        return self.path(digest).read_bytes()

    @contextmanager
    def writer(self, digest: Digest) -> Iterator[IO[bytes]]:
        """A temporary file that becomes the blob only if the block finishes without error.

        The caller verifies the content inside the block; an exception discards the file.
        """
        with replacing(self.path(digest), mode=0o444, tmp_dir=self._tmp) as f:  # blobs never change once stored
            yield f

    def put_bytes(self, digest: Digest, data: bytes) -> None:
        with self.writer(digest) as f:
            f.write(data)

    def import_stream(self, f: IO[bytes], digest: Digest, size: int | None, where: str) -> None:
        """Copy a blob in from a file object, checking it against its digest (and size) on the way."""
        if self.has(digest, size):
            return
        with self.writer(digest) as out:
            h = hashlib.sha256()
            n = 0
            while chunk := f.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
                out.write(chunk)
            if h.hexdigest() != digest.hex or (size is not None and n != size):
                raise ManifestError(f"{where}: blob {digest} does not match its digest or size")

    def meta(self, digest: Digest) -> dict[str, Any] | None:
        try:
            return json.loads((self._meta / (digest.hex + ".json")).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def put_meta(self, digest: Digest, facts: dict[str, Any]) -> None:
        write_json_atomic(self._meta / (digest.hex + ".json"), facts, sort_keys=True)

    def layer_index(self, key: str) -> dict[str, Any] | None:
        """What an earlier build packed from the same inputs (see builder)."""
        try:
            return json.loads((self._layers / (key + ".json")).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def put_layer_index(self, key: str, facts: dict[str, Any]) -> None:
        write_json_atomic(self._layers / (key + ".json"), facts, sort_keys=True)

    def sources(self, digest: Digest) -> list[tuple[str, str]]:
        """(registry, repository) pairs known to hold the blob: candidates to mount from."""
        try:
            return [tuple(x) for x in json.loads((self._sources / (digest.hex + ".json")).read_text())]
        except (FileNotFoundError, ValueError):
            return []

    def add_source(self, digest: Digest, registry: str, repo: str) -> None:
        known = self.sources(digest)
        if (registry, repo) in known:
            return
        write_json_atomic(self._sources / (digest.hex + ".json"), ([(registry, repo)] + known)[:16])
