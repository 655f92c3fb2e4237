"""index: assemble and edit indexes in a registry or an OCI layout, without a daemon.

`create` makes an index of images (each one's platform read from its config), `add`
puts more images into an existing index (an image for a platform the index has already
takes that entry's place), `remove` takes platforms out. Each writes a new index,
deterministically (entries sorted by platform, then the others by digest), and points
the tag at it; entries it was not asked to change (nested indexes, attestations,
artifacts) are carried over unchanged. Members are any source endpoint; those from
elsewhere are copied in with the index, through the engine's tree writer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry_tools import endpoint
from registry_tools.engine import HeldTree, copy_tree
from registry_tools.errors import UsageError
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.platform import Platform
from registry_tools.model.platform.choose import is_attestation
from registry_tools.model.tree import (IMAGE_CONFIGS, ManifestNode, entry_of, image_platforms, index_node,
                                       platform_of, without)
from registry_tools.session import Session, using
from registry_tools.store.origin import Origins, read_small


@dataclass
class IndexResult:
    target: str
    digest: Digest
    platforms: list[str] = field(default_factory=list)  # of the images the index names now
    entries: int = 0
    replaced: list[str] = field(default_factory=list)  # platforms whose entries were replaced or removed
    copied: int = 0  # images copied into the target's repository or layout
    others: list[str] = field(default_factory=list)  # the entries that are no platform's image, described
    resolved: list[tuple[str, Digest]] = field(default_factory=list)  # members named by a tag: the digest taken

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


class _Target:
    """Where the index lives: a registry repository and tag, or an OCI layout and tag."""

    def __init__(self, text: str, session: Session):
        self.end = endpoint.parse(text, "destination")
        self.session = session
        if not self.end.holds_many:
            raise UsageError(f"{text}: an index lives in a registry or an OCI layout (oci:DIR[:TAG]), where other "
                             "images stay beside it")
        if self.end.repository is not None and self.end.repository.digest:
            raise UsageError(f"{text} names a digest; name the tag the index is to have")
        self.tag = self.end.names()[1] or "latest"
        if not refs.TAG_RE.match(self.tag):
            raise UsageError(f"{text}: {self.tag!r} is not a valid tag")
        self.end = self.end.with_tag(self.tag)
        self.resolved: list[tuple[str, Digest]] = []
        self.destination = self.end.destination(session, endpoint.Writing(tag=self.tag, keep_others=True))

    def __str__(self) -> str:
        return self.end.display()

    def current(self) -> ManifestNode:
        """The index the tag names now; its entries known by their descriptors."""
        node = self.end.tree(self.session).read((), shallow=True)
        if not node.is_index:
            raise UsageError(f"{self} names a single image ({node.digest}), not an index; make one with "
                             "`index create`")
        return node

    def member(self, text: str, origins: Origins) -> tuple[ManifestNode, bool]:
        """An image (or index) to put in: its tree, as an entry its platform (from its config), its
        blobs where the target reads them; and whether it comes from elsewhere. A member named by
        a tag is taken at the digest the tag names now (an index names its members by digest):
        the result says which."""
        source = endpoint.parse(text, "source")
        trees = source.tree(self.session)
        tree = trees.read(())
        if not source.pinned:
            self.resolved.append((text, tree.digest))
        blobs = trees.blobs(tree, self.destination.need)
        origins.add([b.digest for b in tree.all_blobs()], blobs)
        elsewhere = source.repository is None or self.end.repository is None or \
            source.repository.name_only() != self.end.repository.name_only()
        if tree.is_index or not tree.blobs:
            return tree, elsewhere
        config = tree.blobs[0]
        entry: dict[str, Any] = {"mediaType": tree.media_type, "digest": str(tree.digest), "size": len(tree.raw)}
        if config.media_type in IMAGE_CONFIGS:
            cfg = mf.parse_config(read_small(blobs, config), f"config of {text}")
            p = Platform.from_json(cfg)
            if not p.os or not p.architecture:
                raise UsageError(f"{text}: its config names no os and architecture; an index entry needs them")
            entry["platform"] = p.to_json()
        elif isinstance(tree.doc.get("artifactType"), str):
            entry["artifactType"] = tree.doc["artifactType"]
        tree.descriptor = mf.Descriptor.from_json(entry, text)
        return tree, elsewhere

    def write(self, index: ManifestNode, origins: Origins) -> None:
        copy_tree(HeldTree(index, origins), self.destination, self.session.cache)


def _result(target: _Target, index: ManifestNode, replaced: list[str], copied: int) -> IndexResult:
    return IndexResult(str(target), index.digest, image_platforms(index), len(index.children), replaced, copied,
                       _others(index), target.resolved)


def _others(index: ManifestNode) -> list[str]:
    """The entries that are no platform's image, as a summary names them: nested indexes by digest,
    attestations and artifacts counted."""
    nested = [f"the index {c.digest}" for c in index.children
              if c.descriptor.media_type in mf.INDEX_TYPES and not platform_of(c)]
    attestations = sum(1 for c in index.children if is_attestation(entry_of(c)))
    artifacts = len(index.children) - len(image_platforms(index)) - len(nested) - attestations
    counted = ((attestations, "attestation", "attestations"), (artifacts, "other entry", "other entries"))
    return nested + [f"{n} {one if n == 1 else many}" for n, one, many in counted if n]


def _members(target: _Target, texts: list[str], origins: Origins) -> tuple[list[ManifestNode], int]:
    got = [target.member(m, origins) for m in texts]
    return [tree for tree, _ in got], sum(1 for _, elsewhere in got if elsewhere)


def create(dest: str, members: list[str], annotations: dict[str, str] | None = None,
           session: Session | None = None) -> IndexResult:
    """`index create DEST SRC...`: a new OCI index of these images, tagged at DEST."""
    if not members:
        raise UsageError("name the images the index is to hold: index create DEST REF@DIGEST...")
    with using(session) as s:
        target, origins = _Target(dest, s), Origins(s.cache)
        trees, copied = _members(target, members, origins)
        index = index_node(trees, mf.OCI_INDEX, annotations)
        target.write(index, origins)
        return _result(target, index, [], copied)


def add(target_text: str, members: list[str], annotations: dict[str, str] | None = None,
        session: Session | None = None) -> IndexResult:
    """`index add TARGET SRC...`: the index TARGET names, with these images in it (an image for
    a platform the index has takes that entry's place, attestations of the old entry going with it)."""
    if not members:
        raise UsageError("name the images to add: index add TARGET REF@DIGEST...")
    with using(session) as s:
        target, origins = _Target(target_text, s), Origins(s.cache)
        current = target.current()
        trees, copied = _members(target, members, origins)
        offered = set(image_platforms(current))
        taken = [p for t in trees if (p := platform_of(t)) and p in offered]
        base = {k: v for k, v in current.doc.items() if k != "manifests"}
        kept = without(current, [_parse_platform(p) for p in taken]).children if taken else current.children
        index = index_node(kept + trees, current.media_type, annotations, base)
        target.write(index, origins)
        return _result(target, index, taken, copied)


def remove(target_text: str, platforms: list[Platform], session: Session | None = None) -> IndexResult:
    """`index remove TARGET --platform P`: the index without those platforms' entries."""
    if not platforms:
        raise UsageError("name the platforms to remove: index remove TARGET --platform OS/ARCH[/VARIANT]")
    with using(session) as s:
        target = _Target(target_text, s)
        index = without(target.current(), platforms)
        if not index.children:
            raise UsageError(f"removing {', '.join(map(str, platforms))} would leave {target} empty")
        target.write(index, Origins(s.cache))
        return _result(target, index, [str(p) for p in platforms], 0)


def _parse_platform(text: str) -> Platform:
    from registry_tools.model.platform.values import parse

    return parse(text)


__all__ = ["IndexResult", "add", "create", "parse_annotations", "remove"]
