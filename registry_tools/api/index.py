"""index: assemble and edit indexes in a registry or an OCI layout, without a daemon.

`create` makes an index of images (each one's platform read from its config), `add`
puts more images into an existing index (an image for a platform the index has already
takes that entry's place), `remove` takes platforms out. Each writes a new index,
deterministically (entries sorted by platform, then the others by digest), and points
the tag at it; entries it was not asked to change (nested indexes, attestations,
artifacts) are carried over unchanged. Images from another repository or registry are
copied in first, by digest, blobs streamed and verified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry_tools.api.copy import Endpoint, endpoint
from registry_tools.errors import UsageError
from registry_tools.formats.oci_layout import REF_NAME, LayoutReader, tag_in_layout
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.platform import Platform
from registry_tools.model.tree import (ManifestNode, image_platforms, index_node, parse_node, platform_of, shallow,
                                       without)
from registry_tools.registry.destination import RegistrySink
from registry_tools.registry.mirror import replicate
from registry_tools.registry.source import RegistrySource
from registry_tools.registry.tree import fetch_blobs, read_tree
from registry_tools.session import Session, using

IMAGE_CONFIGS = (mf.OCI_CONFIG, mf.DOCKER_CONFIG)


@dataclass
class IndexResult:
    target: str
    digest: Digest
    platforms: list[str] = field(default_factory=list)  # of the images the index names now
    entries: int = 0
    replaced: list[str] = field(default_factory=list)  # platforms whose entries were replaced or removed
    copied: int = 0  # images copied into the target's repository or layout

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.target, "digest": str(self.digest), "platforms": self.platforms,
                "entries": self.entries, "replaced": self.replaced, "copied": self.copied}


def parse_annotations(texts: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in texts or []:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"--annotation {text!r}: expected KEY=VALUE")
        out[key] = value
    return out


@dataclass
class _Member:
    """An image (or index) to put into the index: where it is, and its tree."""

    origin: RegistrySource
    tree: ManifestNode


def _member(text: str, session: Session) -> _Member:
    """REF@DIGEST (or REF:TAG): its tree, and as an entry its platform, from its config."""
    try:
        ref = refs.parse_normalized(text)
    except UsageError as e:
        raise UsageError(f"{text!r}: {e}") from None
    origin = session.source(ref)
    digest = Digest.parse(ref.digest) if ref.digest else origin.resolve_tag(ref.tag or "latest")
    tree = read_tree(origin, mf.Descriptor("", digest, 0))
    if tree.is_index or not tree.blobs:
        return _Member(origin, tree)
    config = tree.blobs[0]
    entry: dict[str, Any] = {"mediaType": tree.media_type, "digest": str(digest), "size": len(tree.raw)}
    if config.media_type in IMAGE_CONFIGS:
        # parse_config holds its os, architecture, variant, os.version and os.features to the platform rule
        cfg = mf.parse_config(origin.blob_bytes(config, f"config of {text}"), f"config of {text}")
        p = Platform.from_json(cfg)
        if not p.os or not p.architecture:
            raise UsageError(f"{text}: its config names no os and architecture; an index entry needs them")
        entry["platform"] = p.to_json()
    elif isinstance(tree.doc.get("artifactType"), str):
        entry["artifactType"] = tree.doc["artifactType"]
    tree.descriptor = mf.Descriptor.from_json(entry, text)
    return _Member(origin, tree)


class _Target:
    """Where the index lives: a registry repository and tag, or an OCI layout and tag."""

    def __init__(self, text: str, session: Session):
        self.end: Endpoint = endpoint(text, "destination")
        self.session = session
        if self.end.kind not in ("registry", "oci"):
            raise UsageError(f"{text}: an index lives in a registry or an OCI layout (oci:DIR[:TAG]), "
                             f"not a {self.end.kind}")
        if self.end.kind == "registry":
            assert self.end.ref is not None
            if self.end.ref.digest:
                raise UsageError(f"{text} names a digest; name the tag the index is to have")
            self.tag = self.end.ref.tag or "latest"
        else:
            self.tag = self.end.name or "latest"
            if not refs.TAG_RE.match(self.tag):
                raise UsageError(f"{text}: {self.tag!r} is not a valid tag")

    def __str__(self) -> str:
        if self.end.kind == "registry":
            assert self.end.ref is not None
            return f"{self.end.ref.name_only()}:{self.tag}"
        return f"oci:{self.end.path}:{self.tag}"

    def current(self) -> ManifestNode:
        """The index the tag names now; its entries known by their descriptors."""
        if self.end.kind == "registry":
            assert self.end.ref is not None
            origin = self.session.source(self.end.ref.name_only())
            digest = origin.resolve_tag(self.tag)
            raw, ctype = origin.manifest_bytes(digest)
            where = f"{self}"
        else:
            assert self.end.path is not None
            if not self.end.path.is_dir():
                raise UsageError(f"{self.end.path} is not an OCI layout")
            with LayoutReader(self.end.path, str(self.end.path)) as layout:
                found = layout.entries(self.tag)
                if not found:
                    raise UsageError(f"{self.end.path}: no entry tagged {self.tag!r}")
                digest = found[0].digest
                layout.import_blob(found[0], self.session.cache)  # verified on the way in
                raw = self.session.cache.read_small(found[0], str(self))
                ctype, where = found[0].media_type, str(self)
        node, below = parse_node(mf.Descriptor("", digest, len(raw)), raw, ctype, where)
        if not node.is_index:
            raise UsageError(f"{self} names a single image ({digest}), not an index; make one with `index create`")
        node.children = [shallow(d) for d in below]
        return node

    def write(self, index: ManifestNode, members: list[_Member]) -> int:
        """Copy the new members in, then point the tag at `index`; returns how many were copied."""
        copied = 0
        if self.end.kind == "registry":
            ref = self.end.ref
            assert ref is not None
            for m in members:
                same = (m.origin.registry.domain, m.origin.repo) == (ref.domain, ref.path)
                if not same:
                    r = replicate(self.session, m.origin, m.tree.digest, ref.name_only(), [], self.session.progress)
                    copied += 0 if r.up_to_date else 1
            sink = RegistrySink(self.session, ref)
            try:
                sink.put_manifest(index.raw, index.media_type, self.tag)
            finally:
                sink.close(True)
            return copied
        assert self.end.path is not None
        for m in members:
            fetch_blobs(m.origin, m.tree)
            copied += 1
        tag_in_layout(self.end.path, index, self.session.store, self.tag)
        return copied


def _result(target: _Target, index: ManifestNode, replaced: list[str], copied: int) -> IndexResult:
    return IndexResult(str(target), index.digest, image_platforms(index), len(index.children), replaced, copied)


def create(dest: str, members: list[str], *, annotations: dict[str, str] | None = None,
           session: Session | None = None) -> IndexResult:
    """`index create DEST REF@DIGEST...`: a new OCI index of these images, tagged at DEST."""
    if not members:
        raise UsageError("name the images the index is to hold: index create DEST REF@DIGEST...")
    with using(session) as s:
        target = _Target(dest, s)
        got = [_member(m, s) for m in members]
        index = index_node([m.tree for m in got], mf.OCI_INDEX, annotations)
        return _result(target, index, [], target.write(index, got))


def add(target_text: str, members: list[str], *, annotations: dict[str, str] | None = None,
        session: Session | None = None) -> IndexResult:
    """`index add TARGET REF@DIGEST...`: the index TARGET names, with these images in it (an image for
    a platform the index has takes that entry's place, attestations of the old entry going with it)."""
    if not members:
        raise UsageError("name the images to add: index add TARGET REF@DIGEST...")
    with using(session) as s:
        target = _Target(target_text, s)
        current = target.current()
        got = [_member(m, s) for m in members]
        offered = set(image_platforms(current))
        taken = [p for m in got if (p := platform_of(m.tree)) and p in offered]
        base = {k: v for k, v in current.doc.items() if k != "manifests"}
        kept = without(current, [_parse_platform(p) for p in taken]).children if taken else current.children
        index = index_node(kept + [m.tree for m in got], current.media_type, annotations, base)
        return _result(target, index, taken, target.write(index, got))


def remove(target_text: str, platforms: list[Platform], *, session: Session | None = None) -> IndexResult:
    """`index remove TARGET --platform P`: the index without those platforms' entries."""
    if not platforms:
        raise UsageError("name the platforms to remove: index remove TARGET --platform OS/ARCH[/VARIANT]")
    with using(session) as s:
        target = _Target(target_text, s)
        current = target.current()
        index = without(current, platforms)
        if not index.children:
            raise UsageError(f"removing {', '.join(map(str, platforms))} would leave {target} empty")
        return _result(target, index, [str(p) for p in platforms], target.write(index, []))


def _parse_platform(text: str) -> Platform:
    from registry_tools.model.platform.values import parse

    return parse(text)


__all__ = ["IndexResult", "REF_NAME", "add", "create", "parse_annotations", "remove"]
