"""Content digests and the hash forms users pin (hex, SRI, Nix base32).

Everything we fetch is addressed by digest, so one strict parser and one place that
compares hashes keep verification uniform.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import queue
import re
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from registry_tools.errors import DigestMismatch, InvalidDigest, SizeMismatch, VerificationError


class Readable(Protocol):
    def read(self, n: int = -1) -> bytes: ...


class ReaderBase:
    """`readinto` and `readable` for a class that defines `read`: what io.BufferedReader and
    the decompressors ask of a raw stream."""

    def read(self, n: int = -1) -> bytes:
        raise NotImplementedError

    def readinto(self, buf: "bytearray | memoryview") -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class ReadableFile(Readable, Protocol):
    def close(self) -> None: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


_ALGORITHM = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*\Z")
_ENCODED = re.compile(r"^[a-zA-Z0-9=_-]+\Z")
_HEX_LEN = {"sha256": 64}
# Recognised by the OCI spec but not something we can verify; refused rather than trusted.
_KNOWN_UNSUPPORTED = {"sha384", "sha512"}

NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> "Digest":
        """Parse `algorithm:encoded`, refusing anything we could not verify."""
        if not isinstance(text, str) or ":" not in text:
            raise InvalidDigest(f"invalid digest {text!r}: expected sha256:<64 hex digits>")
        algorithm, _, encoded = text.partition(":")
        if not _ALGORITHM.match(algorithm) or not encoded or not _ENCODED.match(encoded):
            raise InvalidDigest(f"invalid digest {text!r}: expected sha256:<64 hex digits>")
        if algorithm not in _HEX_LEN:
            raise InvalidDigest(f"unsupported digest algorithm {algorithm!r} in {text!r}; only sha256 is supported")
        if len(encoded) != _HEX_LEN[algorithm] or not re.fullmatch(r"[0-9a-f]+", encoded):
            raise InvalidDigest(
                f"invalid digest {text!r}: {algorithm} takes {_HEX_LEN[algorithm]} lowercase hex digits"
            )
        return cls(algorithm, encoded)

    @classmethod
    def of_bytes(cls, data: bytes) -> "Digest":
        return cls("sha256", hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def new_hash(self) -> "hashlib._Hash":
        return hashlib.new(self.algorithm)


def verify_bytes(what: str, data: bytes, digest: Digest, size: int | None = None) -> None:
    """Check bytes already in memory, with the reader's own checks."""
    VerifyingReader(io.BytesIO(data), digest, size, what).drain()


class _BackgroundHash:
    """A hash computed on a thread of its own, fed through a bounded queue (the reader's thread
    stays free for the work it feeds, such as decompressing)."""

    _STOP = object()

    def __init__(self, name: str, depth: int = 16):
        self._hash = hashlib.new(name)
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="verify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._q.get()) is not self._STOP:
            self._hash.update(data)  # type: ignore[arg-type]

    def update(self, data: bytes) -> None:
        self._q.put(bytes(data))

    def hexdigest(self) -> str:
        self._q.put(self._STOP)
        self._thread.join()
        return self._hash.hexdigest()

    def stop(self) -> None:
        """Stop without a result (the read was abandoned)."""
        self._q.put(self._STOP)  # the helper is draining the queue: this never waits long


class VerifyingReader(ReaderBase):
    """The one verifying reader: every byte read from anywhere passes through one of these.

    It hashes and counts what is read from `raw` and checks, as soon as it can, that the
    content is what `digest` and `size` name: a size overrun at once, the digest at EOF.
    A failure raises `fail(error)` (by default the DigestMismatch or SizeMismatch itself),
    so the origin (registry, cache, layout, archive) decides the error's class and words
    while the check stays here. `tee` receives every byte (the cache file being filled).
    """

    def __init__(self, raw: Readable, digest: Digest, size: int | None, what: str, *,
                 tee: "Writable | None" = None, fail: "Callable[[VerificationError], Exception] | None" = None,
                 background: bool = False):
        """`background`: hash on a helper thread (for big streams whose reader has other work)."""
        self._raw = raw
        self.digest = digest
        self.size = size
        self.what = what
        self._hash: "hashlib._Hash | _BackgroundHash" = (
            _BackgroundHash(digest.algorithm) if background else digest.new_hash())
        self.count = 0
        self.verified = False
        self._tee = tee
        self._fail = fail or (lambda e: e)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self.count += len(data)
            if self.size is not None and self.count > self.size:
                raise self._fail(SizeMismatch(self.what, self.size, self.count))
            if self._tee is not None:
                self._tee.write(data)
        elif n != 0 and not self.verified:
            self._check()
        return data

    def _check(self) -> None:
        if self.size is not None and self.count != self.size:
            raise self._fail(SizeMismatch(self.what, self.size, self.count))
        actual = self._hash.hexdigest()
        if actual != self.digest.hex:
            raise self._fail(DigestMismatch(self.what, str(self.digest), f"{self.digest.algorithm}:{actual}"))
        self.verified = True

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read to the end (checking everything on the way)."""
        while self.read(chunk):
            pass

    def read_all(self, limit: int) -> bytes:
        """Everything, verified; refuses content over `limit` bytes (for documents in memory)."""
        if self.size is not None and self.size > limit:
            raise self._fail(SizeMismatch(f"{self.what} (over the {limit} byte limit)", limit, self.size))
        buf = bytearray()
        while chunk := self.read(1 << 20):
            buf += chunk
            if len(buf) > limit:
                raise self._fail(SizeMismatch(f"{self.what} (over the {limit} byte limit)", limit, len(buf)))
        return bytes(buf)

    def close(self) -> None:
        if isinstance(self._hash, _BackgroundHash) and not self.verified:
            self._hash.stop()
        close = getattr(self._raw, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "VerifyingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the hash forms a user pins -----------------------------------------------------

def nix32_encode(raw: bytes) -> str:
    """Nix's base32: its own alphabet, least significant bits first."""
    n = (len(raw) * 8 - 1) // 5 + 1
    out = []
    for k in range(n - 1, -1, -1):
        bit = k * 5
        i, r = divmod(bit, 8)
        c = raw[i] >> r
        if i + 1 < len(raw):
            c |= raw[i + 1] << (8 - r)
        out.append(NIX32_ALPHABET[c & 0x1F])
    return "".join(out)


def nix32_decode(text: str, size: int) -> bytes:
    if len(text) != (size * 8 - 1) // 5 + 1:
        raise ValueError("wrong length for nix base32")
    out = bytearray(size)
    for n, ch in enumerate(reversed(text)):
        d = NIX32_ALPHABET.find(ch)
        if d < 0:
            raise ValueError(f"invalid nix base32 character {ch!r}")
        bit = n * 5
        i, r = divmod(bit, 8)
        out[i] |= (d << r) & 0xFF
        carry = d >> (8 - r)
        if carry:
            if i + 1 >= size:
                raise ValueError("nix base32 value out of range")
            out[i + 1] |= carry
    return bytes(out)


def sri(raw: bytes) -> str:
    return "sha256-" + base64.b64encode(raw).decode()


def parse_output_hash(text: str) -> bytes:
    """Accept a sha256 as SRI (`sha256-…`), `sha256:…`, hex, Nix base32 or base64; return raw bytes."""
    s = text.strip()
    if not s:
        raise InvalidDigest("the hash is empty: give the sha256 to check, or leave --hash out")
    if not s.isascii() or not s.isprintable():
        raise InvalidDigest(f"invalid hash {text!r}: expected sha256 as SRI (sha256-…), hex or Nix base32")
    body = s
    if s.startswith("sha256-"):
        body = s[len("sha256-"):]
        return _b64(text, body)
    if s.startswith("sha256:"):
        body = s[len("sha256:"):]
    elif "-" in s[:10] or ":" in s[:10]:
        algo = re.split(r"[-:]", s, maxsplit=1)[0]
        raise InvalidDigest(f"unsupported hash algorithm {algo!r} in {text!r}; use sha256")
    if len(body) == 64:
        try:
            return binascii.unhexlify(body.lower())
        except binascii.Error:
            pass
    if len(body) == 52:
        try:
            return nix32_decode(body, 32)
        except ValueError:
            pass
    if len(body) == 44:
        return _b64(text, body)
    raise InvalidDigest(
        f"invalid hash {text!r}: expected sha256 as SRI (sha256-…), 64 hex digits or 52 Nix base32 characters"
    )


def _b64(original: str, body: str) -> bytes:
    try:
        raw = base64.b64decode(body, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise InvalidDigest(f"invalid hash {original!r}: not a base64 sha256")
    return raw
