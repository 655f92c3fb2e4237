"""A content-addressed blob cache shared by every command.

Blobs are stored under their digest only after they were verified, and every read
verifies them again (`open`, `read_small`): a damaged blob raises CacheDamaged, which
the engine answers by evicting it and fetching it once more. Small JSON facts about a
layer (its diff_id and uncompressed size) sit beside it so they are computed once;
facts that do not parse with the right types are ignored and removed.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from registry_tools.errors import CacheDamaged, InvalidDigest, VerificationError
from registry_tools.fileio import replacing, write_json_atomic
from registry_tools.model.digest import Digest, Readable, ReadableFile, VerifyingReader
from registry_tools.model.manifest import MAX_MANIFEST_SIZE, Descriptor, load_json

COMPRESSIONS = ("gzip", "zstd", "none")

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

    def open(self, desc: Descriptor, what: str = "", background: bool = False) -> VerifyingReader:
        """A cached blob, verified against its descriptor as it is read (CacheDamaged if not);
        `background` hashes on a helper thread (for a reader that decompresses)."""
        try:
            raw = open(self.path(desc.digest), "rb")
        except FileNotFoundError:
            raise CacheDamaged(desc.digest, "it is missing") from None

        def damaged(e: VerificationError) -> Exception:
            return CacheDamaged(desc.digest, str(e))
        return VerifyingReader(raw, desc.digest, desc.size, what or f"cached blob {desc.digest}", fail=damaged,
                               background=background)

    def open_unhashed(self, desc: Descriptor) -> ReadableFile:
        """A cached blob read without hashing it: only for a reader whose output another digest
        checks in full (a layer's tar against its diff_id), so each byte is verified once."""
        try:
            return open(self.path(desc.digest), "rb")
        except FileNotFoundError:
            raise CacheDamaged(desc.digest, "it is missing") from None

    def read_small(self, desc: Descriptor, what: str = "") -> bytes:
        """A small cached blob (a manifest, a config) in memory, verified."""
        with self.open(desc, what) as reader:
            return reader.read_all(MAX_MANIFEST_SIZE)

    def evict(self, digest: Digest) -> None:
        """Forget a blob and every fact kept about it (it was found damaged)."""
        for p in (self.path(digest), self._meta / f"{digest.hex}.json", self._sources / f"{digest.hex}.json"):
            p.unlink(missing_ok=True)

    def has(self, digest: Digest, size: int | None = None) -> bool:
        """Whether a blob of that size is stored: a hint for skipping work, never a check of content."""
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
        if not self._blobs.is_dir():  # cleared
            return 0, 0
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

    def import_stream(self, f: Readable, digest: Digest, size: int | None, where: str) -> None:
        """Copy a blob in from a file object, checking it against its digest (and size) on the way."""
        if self.has(digest, size):
            return
        with self.writer(digest) as out:
            VerifyingReader(f, digest, size, f"{where}: blob {digest}", tee=out).drain()

    def _facts(self, path: Path) -> Any:
        """A JSON fact file, or None if it is missing or unreadable (a damaged one is removed)."""
        try:
            text = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        try:
            return load_json(text, str(path), ValueError)
        except ValueError:
            path.unlink(missing_ok=True)
            return None

    def meta(self, digest: Digest) -> dict[str, Any] | None:
        """What an earlier run measured of a layer: diff_id, uncompressed size, compression."""
        path = self._meta / (digest.hex + ".json")
        facts = self._facts(path)
        if facts is None:
            return None
        ok = (isinstance(facts, dict) and isinstance(facts.get("size"), int) and not isinstance(facts["size"], bool)
              and facts["size"] >= 0 and facts.get("compression") in COMPRESSIONS
              and isinstance(facts.get("diff_id"), str))
        if ok:
            try:
                Digest.parse(facts["diff_id"])
            except InvalidDigest:
                ok = False
        if not ok:
            path.unlink(missing_ok=True)
            return None
        return facts

    def put_meta(self, digest: Digest, facts: dict[str, Any]) -> None:
        write_json_atomic(self._meta / (digest.hex + ".json"), facts, sort_keys=True)

    def layer_index(self, key: str) -> dict[str, Any] | None:
        """What an earlier build packed from the same inputs (see builder)."""
        path = self._layers / (key + ".json")
        facts = self._facts(path)
        ok = isinstance(facts, dict) and all(isinstance(facts.get(k), str) for k in ("digest", "diff_id", "mediaType"))
        ok = ok and all(isinstance(facts.get(k), int) and facts[k] >= 0 for k in ("size", "uncompressed"))
        if ok:
            try:
                Digest.parse(facts["digest"])
                Digest.parse(facts["diff_id"])
            except InvalidDigest:
                ok = False
        if not ok:
            if facts is not None:
                path.unlink(missing_ok=True)
            return None
        return facts

    def put_layer_index(self, key: str, facts: dict[str, Any]) -> None:
        write_json_atomic(self._layers / (key + ".json"), facts, sort_keys=True)

    def sources(self, digest: Digest) -> list[tuple[str, str]]:
        """(registry, repository) pairs known to hold the blob: candidates to mount from."""
        facts = self._facts(self._sources / (digest.hex + ".json"))
        if not isinstance(facts, list):
            return []
        return [(x[0], x[1]) for x in facts
                if isinstance(x, list) and len(x) == 2 and all(isinstance(s, str) for s in x)]

    def add_source(self, digest: Digest, registry: str, repo: str) -> None:
        known = self.sources(digest)
        if (registry, repo) in known:
            return
        write_json_atomic(self._sources / (digest.hex + ".json"), ([(registry, repo)] + known)[:16])
