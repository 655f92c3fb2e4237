"""fetch-blob: one blob or manifest of a repository, by digest, into a file.

What Nix's fetcher runs for each blob a layer pin lists: a fixed-output derivation whose
hash is the blob's digest. The bytes stream from the registry (resumed after a cut)
through the verifying reader into a file written beside the output and renamed into
place. With `unchecked`, a blob whose bytes have the right size but the wrong digest is
kept (the result says so) for a caller that checks the digest itself (Nix rejects it with its
own hash mismatch naming the blob, and nothing depending on it is built); its size is
still bounded and checked here.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from registry_tools.errors import DigestMismatch, RegistryError, UsageError
from registry_tools.fileio import check_destination, replacing
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest, VerifyingReader
from registry_tools.model.compression import READ_SIZE
from registry_tools.registry.blob import BlobStream
from registry_tools.registry.client import Registry
from registry_tools.session import Session, using


@dataclass(frozen=True)
class BlobOptions:
    """What `registry-tools fetch-blob` takes."""

    reference: str  # NAME@DIGEST
    output: str | PathLike[str]
    size: int | None = None  # known (a pin says it): no HEAD to learn it
    manifest: bool = False  # a manifest (GET …/manifests/DIGEST), not a blob
    unchecked: bool = False  # a wrong digest is the caller's to reject (Nix's fixed-output check)


@dataclass(frozen=True)
class BlobResult:
    digest: Digest
    size: int
    output: Path
    mismatch: str = ""  # kept with the wrong digest (`unchecked`): what the check found

    @property
    def verified(self) -> bool:
        return not self.mismatch


def _announced_size(registry: Registry, repo: str, digest: Digest) -> int:
    """A blob's size as the registry states it for a HEAD."""
    what = f"{registry.domain}/{repo}@{digest}"
    resp = registry.request("HEAD", repo, f"/v2/{repo}/blobs/{digest}", kind="blob-head")
    registry.check(resp, what, repo)
    length = resp.headers.get("content-length", "")
    if not length.isdigit():
        raise RegistryError(f"{what}: the registry did not say the blob's size; give --size")
    return int(length)


def _copy(reader: VerifyingReader, unchecked: bool) -> str:
    """Everything through the verifying reader (into its tee); a digest mismatch kept because the
    caller checks the digest itself is returned, as the check worded it ("": verified)."""
    try:
        while reader.read(READ_SIZE):
            pass
    except DigestMismatch as e:  # raised at the end only: every byte is written, the size was right
        if not unchecked:
            raise
        return str(e)
    return ""


def fetch_blob(options: BlobOptions, session: Session | None = None) -> BlobResult:
    """Write the blob (or manifest) `options.reference` names to `options.output`, verified."""
    o = options
    ref = refs.parse_normalized(o.reference)
    if not ref.digest:
        raise UsageError(f"{o.reference}: name the blob by digest (NAME@sha256:…)")
    if o.size is not None and o.size < 0:
        raise UsageError("--size must be 0 or more")
    digest = Digest.parse(ref.digest)
    out = Path(o.output)
    check_destination(out)
    what = f"{'manifest' if o.manifest else 'blob'} {ref.domain}/{ref.path}@{digest}"
    with using(session) as s, replacing(out) as f:
        registry = s.registry(ref.domain)
        if o.manifest:
            raw, _ = registry.get_manifest(ref.path, str(digest))
            mismatch = _copy(VerifyingReader(io.BytesIO(raw), digest, o.size, what, tee=f), o.unchecked)
        else:
            size = o.size if o.size is not None else _announced_size(registry, ref.path, digest)
            with BlobStream(registry, ref.path, digest, size) as stream:
                mismatch = _copy(VerifyingReader(stream, digest, size, what, tee=f), o.unchecked)
    return BlobResult(digest, out.stat().st_size, out, mismatch)
