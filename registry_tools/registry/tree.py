"""A manifest and everything it names: an index, its manifests, their configs and layers.

Copying between registries moves a whole tree: every manifest is fetched by digest and
verified, and its bytes are pushed verbatim, so every digest (the index's too) is kept.
A subset of an index's platforms is a new index of exactly the entries copied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from registry_tools.errors import ManifestError, PlatformNotFound
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.model.platform import Platform
from registry_tools.model.platform.choose import Matcher, is_attestation, offered_platforms
from registry_tools.model.platform.values import format_platform
from registry_tools.registry.source import RegistrySource

MAX_NESTING = 4  # an index of indexes of ...: real trees have two levels


@dataclass
class ManifestNode:
    """One manifest, verbatim, with the blobs it names and the manifests under it."""

    descriptor: mf.Descriptor
    raw: bytes
    media_type: str
    blobs: list[mf.Descriptor] = field(default_factory=list)
    children: list["ManifestNode"] = field(default_factory=list)
    doc: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def is_index(self) -> bool:
        return isinstance(self.doc.get("manifests"), list)

    def below(self) -> Iterator["ManifestNode"]:
        """Every manifest under this one, children before their parents (the order to push)."""
        for child in self.children:
            yield from child.below()
            yield child

    def all_blobs(self) -> list[mf.Descriptor]:
        seen: dict[Digest, mf.Descriptor] = {}
        for node in [*self.below(), self]:
            for b in node.blobs:
                seen.setdefault(b.digest, b)
        return list(seen.values())

    @property
    def size(self) -> int:
        return sum(b.size for b in self.all_blobs()) + sum(n.descriptor.size for n in self.below()) + len(self.raw)


def read_tree(source: RegistrySource, desc: mf.Descriptor, depth: int = 0) -> ManifestNode:
    """The manifest `desc` names and everything under it, each manifest verified by digest."""
    where = f"manifest {source.registry.domain}/{source.repo}@{desc.digest}"
    if depth > MAX_NESTING:
        raise ManifestError(f"{where}: indexes nested more than {MAX_NESTING} deep")
    raw, content_type = source.manifest_bytes(desc.digest, desc.size or None)
    doc = mf.load_json(raw, where)
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: not a JSON object")
    if doc.get("schemaVersion") == 1:
        raise ManifestError(f"{where}: a schema 1 manifest (deprecated; registries no longer accept it)")
    declared = doc.get("mediaType")
    media_type = declared if isinstance(declared, str) and declared else (
        content_type.split(";")[0].strip() or desc.media_type or mf.guess_media_type(raw))
    if not media_type:
        raise ManifestError(f"{where}: no media type (neither in the manifest nor from the registry)")
    node = ManifestNode(mf.Descriptor(media_type, desc.digest, len(raw), desc.platform, desc.annotations,
                                      raw=desc.raw), raw, media_type, doc=doc)
    entries = doc.get("manifests")
    if entries is not None:
        if not isinstance(entries, list):
            raise ManifestError(f"{where}: manifests is not a list")
        node.children = [read_tree(source, mf.Descriptor.from_json(e, where), depth + 1) for e in entries]
        return node
    config = doc.get("config")
    if config is not None:
        node.blobs.append(mf.Descriptor.from_json(config, f"{where} config"))
    for key in ("layers", "blobs"):
        items = doc.get(key) or []
        if not isinstance(items, list):
            raise ManifestError(f"{where}: {key} is not a list")
        node.blobs += [mf.Descriptor.from_json(b, f"{where} {key}") for b in items]
    return node


def platform_of(node: ManifestNode) -> str:
    p = node.descriptor.platform
    return format_platform(Platform.from_json(p)) if p else ""


def subset(node: ManifestNode, wanted: list[Platform]) -> ManifestNode:
    """A new index of exactly the entries for `wanted` (in the index's order), nothing else."""
    where = f"index {node.digest}"
    if not node.is_index:
        raise ManifestError(f"{node.digest} is a single image, not an index: --platform picks entries of an index")
    entries = [c.descriptor.raw for c in node.children]
    keep: list[int] = []
    for p in wanted:
        matcher = Matcher(p, strict=True)
        found = [i for i, c in enumerate(node.children)
                 if c.descriptor.platform and not is_attestation(entries[i])
                 and matcher.match(Platform.from_json(c.descriptor.platform))]
        if not found:
            raise PlatformNotFound(format_platform(p), offered_platforms(entries))
        keep += [i for i in found[:1] if i not in keep]
    keep.sort()
    doc = dict(node.doc)
    doc["manifests"] = [entries[i] for i in keep]
    raw = mf.canonical_json(doc)
    desc = mf.Descriptor(node.media_type, Digest.of_bytes(raw), len(raw))
    if not raw or len(raw) > mf.MAX_MANIFEST_SIZE:
        raise ManifestError(f"{where}: the new index would be too large")
    return ManifestNode(desc, raw, node.media_type, [], [node.children[i] for i in keep], doc)
