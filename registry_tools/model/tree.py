"""A manifest and everything it names: an index, its manifests, their configs and layers.

Whole-index operations (copy between registries, `pull --all`, a multi-platform build,
`index create/add/remove`) move or write a tree. Every manifest is kept verbatim, so
each digest (the index's too) is kept; the indexes written here (a subset, a build's,
an edited one) are new documents, written deterministically: entries sorted by
platform, then entries without one (nested indexes, attestations) by digest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from registry_tools.errors import ManifestError, PlatformNotFound, UsageError
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.model.image import Image, Layer
from registry_tools.model.platform import Platform
from registry_tools.model.platform.choose import Matcher, is_attestation, offered_platforms
from registry_tools.model.platform.values import format_platform

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

    def manifests(self) -> dict[Digest, bytes]:
        """Every manifest's bytes by digest, this one's included (entries known only by their
        descriptor, `shallow`, left out: they are where the index is already)."""
        return {n.digest: n.raw for n in [*self.below(), self] if n.raw}

    @property
    def size(self) -> int:
        return sum(b.size for b in self.all_blobs()) + sum(n.descriptor.size for n in self.below()) + len(self.raw)


def parse_node(desc: mf.Descriptor, raw: bytes, content_type: str,
               where: str) -> tuple[ManifestNode, list[mf.Descriptor]]:
    """One manifest's bytes (already verified against `desc`) as a node, and the descriptors of the
    manifests under it (for the caller to read and attach as children)."""
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
        return node, [mf.Descriptor.from_json(e, where) for e in entries]
    config = doc.get("config")
    if config is not None:
        node.blobs.append(mf.Descriptor.from_json(config, f"{where} config"))
    for key in ("layers", "blobs"):
        items = doc.get(key) or []
        if not isinstance(items, list):
            raise ManifestError(f"{where}: {key} is not a list")
        node.blobs += [mf.Descriptor.from_json(b, f"{where} {key}") for b in items]
    return node, []


def annotated(node: ManifestNode, annotations: dict[str, str]) -> ManifestNode:
    """The same tree under a top manifest with these annotations added (a new digest)."""
    if not annotations:
        return node
    raw = mf.with_annotations(node.raw, node.media_type, annotations)
    desc = mf.Descriptor(node.media_type, Digest.of_bytes(raw), len(raw), node.descriptor.platform)
    return ManifestNode(desc, raw, node.media_type, node.blobs, node.children, mf.load_json(raw, "manifest"))


def shallow(desc: mf.Descriptor) -> ManifestNode:
    """An entry of an existing index known by its descriptor only (it is where the index is)."""
    return ManifestNode(desc, b"", desc.media_type)


def platform_of(node: ManifestNode) -> str:
    p = node.descriptor.platform
    return format_platform(Platform.from_json(p)) if p else ""


IMAGE_CONFIGS = (mf.OCI_CONFIG, mf.DOCKER_CONFIG)


def is_image(node: ManifestNode) -> bool:
    """A manifest of an image (an image config, layers of layer types), not an index or an artifact."""
    if node.is_index or not node.blobs or node.blobs[0].media_type not in IMAGE_CONFIGS:
        return False
    return all(mf.is_layer_type(b.media_type) for b in node.blobs[1:])


def image_of(node: ManifestNode, config_raw: bytes) -> Image:
    """The image an image manifest of a tree names, given its config's bytes (verified by the caller)."""
    where = f"manifest {node.digest}"
    doc = mf.parse(node.raw, node.media_type, where)
    if not isinstance(doc, mf.ImageManifest) or not is_image(node):
        raise ManifestError(f"{where} is not an image")
    config = mf.parse_config(config_raw, f"config {doc.config.digest}")
    ids = mf.diff_ids(config, f"config {doc.config.digest}")
    if len(ids) != len(doc.layers):
        raise ManifestError(f"{where}: {len(doc.layers)} layers but {len(ids)} diff_ids")
    layers = [Layer(d, diff) for d, diff in zip(doc.layers, ids, strict=True)]
    return Image(doc, node.descriptor, config_raw, config, layers)


def node_of_image(image: Image) -> ManifestNode:
    """An image as a tree of one manifest (its config and layers)."""
    doc = mf.load_json(image.manifest.raw, f"manifest {image.manifest_descriptor.digest}")
    blobs = [image.manifest.config] + [layer.descriptor for layer in image.layers]
    return ManifestNode(image.manifest_descriptor, image.manifest.raw, image.manifest.media_type, blobs, [], doc)


# --- writing indexes -----------------------------------------------------------------------

def _entry_key(entry: dict[str, Any]) -> tuple:
    """Images by platform (os, architecture, variant, os.version); then entries without a
    usable platform (nested indexes, attestations), by digest."""
    p = entry.get("platform")
    if not p or is_attestation(entry):
        return (1, "", "", "", "", str(entry.get("digest")))
    return (0, str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")),
            str(p.get("os.version", "")), str(entry.get("digest")))


def index_document(entries: Iterable[dict[str, Any]], media_type: str = mf.OCI_INDEX,
                   annotations: dict[str, str] | None = None, base: dict[str, Any] | None = None) -> bytes:
    """An index of `entries` sorted by platform; `base` (an existing index) keeps its other fields."""
    items = sorted(entries, key=_entry_key)
    seen: set[tuple] = set()
    for e in items:
        p = e.get("platform")
        if p and not is_attestation(e):
            key = _entry_key(e)[:5]
            if key in seen:
                raise UsageError(f"the index would name platform {format_platform(Platform.from_json(p))} twice; "
                                 "remove the old entry first (index remove --platform)")
            seen.add(key)
    doc: dict[str, Any] = dict(base) if base else {"schemaVersion": 2, "mediaType": media_type}
    doc["manifests"] = items
    if annotations:
        doc["annotations"] = dict(sorted({**(doc.get("annotations") or {}), **annotations}.items()))
    raw = mf.canonical_json(doc)
    if len(raw) > mf.MAX_MANIFEST_SIZE:
        raise ManifestError(f"the index would be over {mf.MAX_MANIFEST_SIZE} bytes")
    return raw


def index_node(children: list[ManifestNode], media_type: str = mf.OCI_INDEX,
               annotations: dict[str, str] | None = None, base: dict[str, Any] | None = None) -> ManifestNode:
    """A new index over `children` (each entry its descriptor: media type, digest, size, platform,
    annotations), entries sorted; children in the same order."""
    raw = index_document([entry_of(c) for c in children], media_type, annotations, base)
    doc = mf.load_json(raw, "index")
    order = {e["digest"]: i for i, e in enumerate(doc["manifests"])}
    kids = sorted(children, key=lambda c: order[str(c.digest)])
    return ManifestNode(mf.Descriptor(doc["mediaType"] if "mediaType" in doc else media_type, Digest.of_bytes(raw),
                                      len(raw)), raw, doc.get("mediaType", media_type), [], kids, doc)


def entry_of(node: ManifestNode) -> dict[str, Any]:
    """An entry of an index as written (ours: from its descriptor)."""
    return node.descriptor.raw or node.descriptor.to_json()


def image_platforms(node: ManifestNode) -> list[str]:
    """The platforms of an index's images (attestations and entries without one left out)."""
    return [p for c in node.children if (p := platform_of(c)) and not is_attestation(entry_of(c))]


def _matching(node: ManifestNode, p: Platform) -> list[int]:
    """The entries of an index for platform `p` (exactly: no fallback to another variant);
    PlatformNotFound, listing what it offers, if none."""
    entries = [entry_of(c) for c in node.children]
    matcher = Matcher(p, strict=True)
    found = [i for i, c in enumerate(node.children)
             if c.descriptor.platform and not is_attestation(entries[i])
             and matcher.match(Platform.from_json(c.descriptor.platform))]
    if not found:
        raise PlatformNotFound(format_platform(p), offered_platforms(entries))
    return found


def subset(node: ManifestNode, wanted: list[Platform]) -> ManifestNode:
    """A new index of exactly the entries for `wanted` (in the index's order), nothing else."""
    where = f"index {node.digest}"
    if not node.is_index:
        raise ManifestError(f"{node.digest} is a single image, not an index: --platform picks entries of an index")
    entries = [c.descriptor.raw for c in node.children]
    keep: list[int] = []
    for p in wanted:
        keep += [i for i in _matching(node, p)[:1] if i not in keep]
    keep.sort()
    doc = dict(node.doc)
    doc["manifests"] = [entries[i] for i in keep]
    raw = mf.canonical_json(doc)
    desc = mf.Descriptor(node.media_type, Digest.of_bytes(raw), len(raw))
    if not raw or len(raw) > mf.MAX_MANIFEST_SIZE:
        raise ManifestError(f"{where}: the new index would be too large")
    return ManifestNode(desc, raw, node.media_type, [], [node.children[i] for i in keep], doc)


def without(node: ManifestNode, platforms: list[Platform]) -> ManifestNode:
    """A new index without the entries for `platforms` (each must match one); the rest as they were."""
    if not node.is_index:
        raise UsageError(f"{node.digest} is a single image, not an index")
    entries = [c.descriptor.raw for c in node.children]
    drop: set[int] = set()
    for p in platforms:
        found = _matching(node, p)
        drop.update(found)
        # attestations that refer to a removed image go with it (buildx's reference annotation)
        gone = {str(node.children[i].digest) for i in found}
        drop.update(i for i, e in enumerate(entries)
                    if (e.get("annotations") or {}).get("vnd.docker.reference.digest") in gone)
    keep = [c for i, c in enumerate(node.children) if i not in drop]
    return index_node(keep, node.media_type, None, {k: v for k, v in node.doc.items() if k != "manifests"})
