"""Registry housekeeping: list a repository's tags, add a tag, delete a manifest."""
from __future__ import annotations

from dataclasses import dataclass

from registry_tools import endpoint
from registry_tools.errors import UsageError
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.registry.repository import all_tags, delete_manifest
from registry_tools.session import Session


def list_tags(image: str, session: Session, page_size: int = 1000) -> list[str]:
    """Every tag of IMAGE's repository, across all of the registry's pages."""
    ref = refs.parse_normalized(image)
    if ref.tag or ref.digest:
        raise UsageError(f"{image}: name a repository (no tag or digest) to list its tags")
    return all_tags(session.registry(ref.domain), ref.path, page_size=page_size)


@dataclass(frozen=True)
class TagResult:
    reference: str
    digest: Digest
    changed: bool  # False: the tag named this digest already (nothing was written)


def tag(source: str, new_tag: str, session: Session) -> TagResult:
    """Point NEW_TAG (in SOURCE's repository) at SOURCE's manifest: one manifest PUT, none if
    the tag names it already. SOURCE is REPO@DIGEST (or REPO:TAG, resolved first), its registry named."""
    ref = endpoint.written_reference(source)
    if not refs.TAG_RE.match(new_tag):
        raise UsageError(f"{new_tag!r} is not a valid tag (give only the tag: it goes in {ref.name})")
    src = session.source(ref)
    digest = Digest.parse(ref.digest) if ref.digest else src.resolve_tag(ref.tag or "latest")
    reg = session.registry(ref.domain)
    if reg.manifest_digest(ref.path, new_tag) == digest:
        return TagResult(f"{ref.name}:{new_tag}", digest, False)
    raw, content_type = src.manifest_bytes(digest)
    media_type = mf.parse(raw, content_type, f"manifest {ref.name}@{digest}").media_type
    reg.put_manifest(ref.path, new_tag, raw, media_type)
    return TagResult(f"{ref.name}:{new_tag}", digest, True)


def delete(image: str, session: Session) -> Digest:
    """Delete the manifest REF@DIGEST names (every tag pointing at it goes with it)."""
    ref = endpoint.written_reference(image)
    if not ref.digest:
        raise UsageError(f"{image}: give REPOSITORY@sha256:… (a delete names the manifest by digest, so a "
                         "tag that moved meanwhile cannot delete the wrong one)")
    digest = Digest.parse(ref.digest)
    delete_manifest(session.registry(ref.domain), ref.path, digest)
    return digest
