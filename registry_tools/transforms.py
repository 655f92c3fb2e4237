"""Transforms: an image edited on its way from a source to a destination, without pulling it.

A transform takes the supply of an image (its manifest, config and layers, and the origin
its blobs are read from) and gives the supply of the edited image (`Composed`). It is lazy:
a layer it does not touch stays the source's layer, read from the source's origin only if
the destination lacks it, so between registries an edit of the config sends one config blob
and one manifest, and an appended layer is the only layer uploaded. Every new config and
manifest is written here, by one function (`edited_image`: canonical JSON, the manifest's
other fields kept, media types converted only when asked). `each_image` edits every image
of an index the same way and writes a new index over them. The transforms themselves
(mutate, append, flatten, rebase) are in `registry_tools.surgery`.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import replace
from typing import Any, Callable, Iterator, Protocol, Sequence

from registry_tools.engine import Need, Transform, TreeEdit, TreeSource
from registry_tools.errors import UsageError
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest, ReadableFile
from registry_tools.model.image import BlobOrigin, Image, Layer, LayerSupply
from registry_tools.model.manifest import canonical_json
from registry_tools.model.platform import is_attestation
from registry_tools.model.tree import ManifestNode, entry_of, image_of, index_node, is_image, node_of_image
from registry_tools.session import Session
from registry_tools.store.cache import BlobCache
from registry_tools.store.layers import LocalLayers
from registry_tools.store.origin import Origins, read_small

log = logging.getLogger("registry_tools.transforms")

# --- media types: the Docker and OCI names of the same documents and bytes ---------------------

NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_OF = {mf.OCI_MANIFEST: mf.DOCKER_MANIFEST, mf.OCI_INDEX: mf.DOCKER_LIST, mf.OCI_CONFIG: mf.DOCKER_CONFIG,
             mf.OCI_LAYER_GZIP: mf.DOCKER_LAYER_GZIP, mf.OCI_LAYER: mf.DOCKER_LAYER,
             NONDISTRIBUTABLE: mf.DOCKER_FOREIGN_LAYER}
OCI_OF = {**{docker: oci for oci, docker in DOCKER_OF.items()}, mf.DOCKER_LAYER_ZSTD: mf.OCI_LAYER_ZSTD}
FORMATS = ("oci", "docker")


def family(media_type: str) -> str:
    """"docker" for a Docker manifest or list, else "oci"."""
    return "docker" if media_type in (mf.DOCKER_MANIFEST, mf.DOCKER_LIST) else "oci"


def typed(media_type: str, fmt: str) -> str:
    """The media type of the same bytes in format `fmt` (a type with no counterpart stays as it is)."""
    if fmt == "oci":
        return OCI_OF.get(media_type, media_type)
    if media_type in (mf.OCI_LAYER_ZSTD, mf.DOCKER_LAYER_ZSTD):
        raise UsageError("a zstd layer has no Docker media type (Docker's manifests know gzip and plain tar "
                         "only): keep the OCI format")
    return DOCKER_OF.get(media_type, media_type)


def retyped(layer: Layer, fmt: str) -> Layer:
    """The layer named with format `fmt`'s media type (its bytes, digest and diff_id the same)."""
    media_type = typed(layer.descriptor.media_type, fmt)
    if media_type == layer.descriptor.media_type:
        return layer
    return replace(layer, descriptor=replace(layer.descriptor, media_type=media_type))


# --- the edited image's manifest -----------------------------------------------------------------

def _entry(desc: mf.Descriptor) -> dict[str, Any]:
    """A descriptor as the manifest lists it: its own fields kept, media type, digest and size set."""
    out = dict(desc.raw) if desc.raw else desc.to_json()
    out.update(mediaType=desc.media_type, digest=str(desc.digest), size=desc.size)
    return out


def edited_image(old: Image, config: dict[str, Any] | None, layers: list[Layer], fmt: str,
                 annotations: dict[str, str], cache: BlobCache) -> Image:
    """`old` with a new config (None: its own bytes kept), these layers, in format `fmt`, with
    `annotations` added to the manifest's; the manifest's other fields kept. Config and manifest
    are stored in the cache (what a destination reads them from). Nothing changed: `old` itself."""
    same_layers = [layer.descriptor for layer in layers] == list(old.manifest.layers)
    if config is None and not annotations and fmt == family(old.manifest.media_type) and same_layers:
        return old
    config_raw = old.config_raw if config is None else canonical_json(config)
    doc = mf.load_json(old.manifest.raw, f"manifest {old.manifest_descriptor.digest}")
    media_type = typed(old.manifest.media_type, fmt)
    if "mediaType" in doc or media_type != old.manifest.media_type:
        doc["mediaType"] = media_type
    config_desc = replace(old.manifest.config, media_type=typed(old.manifest.config.media_type, fmt),
                          digest=Digest.of_bytes(config_raw), size=len(config_raw))
    doc["config"] = _entry(config_desc)
    doc["layers"] = [_entry(layer.descriptor) for layer in layers]
    if fmt == "docker":
        if annotations:
            raise UsageError("annotations need an OCI manifest; a Docker manifest has no place for them")
        dropped = [key for key in ("annotations", "subject", "artifactType") if key in doc]
        for key in dropped:
            del doc[key]
        if dropped:
            log.warning("dropped the manifest's %s: a Docker manifest has no place for them", ", ".join(dropped))
    elif annotations:
        doc["annotations"] = dict(sorted({**(doc.get("annotations") or {}), **annotations}.items()))
    raw = canonical_json(doc)
    manifest = mf.parse(raw, media_type, "the edited manifest")
    assert isinstance(manifest, mf.ImageManifest)
    desc = mf.Descriptor(media_type, Digest.of_bytes(raw), len(raw), old.manifest_descriptor.platform)
    cache.put_bytes(manifest.config.digest, config_raw)
    cache.put_bytes(desc.digest, raw)
    return Image(manifest, desc, config_raw, config if config is not None else old.config, layers)


def manifest_annotations(image: Image) -> dict[str, str]:
    """The annotations of an image's manifest (type-checked where the manifest was parsed)."""
    doc = mf.load_json(image.manifest.raw, f"manifest {image.manifest_descriptor.digest}")
    notes = doc.get("annotations")
    return {k: v for k, v in notes.items() if isinstance(v, str)} if isinstance(notes, dict) else {}


# --- the edited image's supply ------------------------------------------------------------------

Opener = Callable[[], ReadableFile]


class Layers(Protocol):
    """What `Composed` takes layers from: a supply, or layers made here (`Made`)."""

    def layer(self, i: int) -> Layer: ...

    def ready(self) -> Iterator[int]: ...

    def early(self, i: int) -> tuple[Layer, int, Opener] | None: ...

    def measured(self) -> list[Layer]: ...


class Made:
    """Layers made here (packed into the cache, measured): nothing to wait for."""

    def __init__(self, layers: list[Layer]):
        self._layers = layers

    def layer(self, i: int) -> Layer:
        return self._layers[i]

    def ready(self) -> Iterator[int]:
        return iter(range(len(self._layers)))

    def early(self, i: int) -> None:
        return None

    def measured(self) -> list[Layer]:
        return list(self._layers)


def origins(cache: BlobCache, *supplies: LayerSupply) -> Origins:
    """Blobs from the cache (what was made here), else from the supply whose image names them."""
    out = Origins(cache)
    for supply in supplies:
        image = supply.image()
        out.add([image.config_digest, *(layer.descriptor.digest for layer in image.layers)], supply.origin)
    return out


class Composed:
    """The supply of an edited image (`image`): its layer i is layer j of `slots[i]`'s supply (an
    untouched layer: that supply's own, waited for as it says) under the descriptor the edited
    manifest lists; its blobs are read from `origin`."""

    def __init__(self, image: Image, slots: list[tuple[Layers, int]], origin: BlobOrigin):
        assert len(slots) == len(image.layers)
        self._image = image
        self._slots = slots
        self._origin = origin
        self._parts: list[Layers] = list({id(s): s for s, _ in slots}.values())

    @property
    def origin(self) -> BlobOrigin:
        return self._origin

    def image(self) -> Image:
        return self._image

    def count(self) -> int:
        return len(self._slots)

    def _named(self, i: int, got: Layer) -> Layer:
        return Layer(self._image.layers[i].descriptor, got.diff_id, got.size)

    def layer(self, i: int) -> Layer:
        part, j = self._slots[i]
        return self._named(i, part.layer(j))

    def ready(self) -> Iterator[int]:
        """Each part's layers in the order that part makes them available."""
        where: dict[tuple[int, int], list[int]] = {}
        for i, (part, j) in enumerate(self._slots):
            where.setdefault((id(part), j), []).append(i)
        for part in self._parts:
            for j in part.ready():
                yield from where.get((id(part), j), [])

    def early(self, i: int) -> tuple[Layer, int, Opener] | None:
        part, j = self._slots[i]
        got = part.early(j)
        return None if got is None else (self._named(i, got[0]), got[1], got[2])

    def measured(self) -> list[Layer]:
        done = {id(part): part.measured() for part in self._parts}
        return [self._named(i, done[id(part)][j]) for i, (part, j) in enumerate(self._slots)]


# --- a whole index ------------------------------------------------------------------------------

def _index_type(tree: ManifestNode, children: list[ManifestNode]) -> tuple[str, dict[str, Any]]:
    """The new index's media type and fields: a Docker list over Docker manifests only (its
    annotations dropped), an OCI index otherwise."""
    base = {k: v for k, v in tree.doc.items() if k != "manifests"}
    images = [c.media_type for c in children if c.media_type in mf.IMAGE_TYPES]
    fmt = "docker" if images and all(t == mf.DOCKER_MANIFEST for t in images) else "oci"
    media_type = typed(tree.media_type, fmt)
    if "mediaType" in base or media_type != tree.media_type:
        base["mediaType"] = media_type
    if fmt == "docker":
        base.pop("annotations", None)
    return media_type, base


def each_image(transforms: Sequence[Transform], session: Session) -> TreeEdit:
    """An edit of a tree: every image of the index through `transforms`, under a new index (the
    old index's own fields kept). Attestations are dropped: they name the old images' digests."""
    def edit(tree: ManifestNode, source: TreeSource, blobs: BlobOrigin,
             stack: ExitStack, need: Need) -> tuple[ManifestNode, BlobOrigin]:
        found = Origins(session.cache)

        def one(node: ManifestNode) -> ManifestNode:
            image = image_of(node, read_small(blobs, node.blobs[0]))
            supply: LayerSupply = stack.enter_context(LocalLayers(image, session.store, origin=blobs))
            for transform in transforms:
                supply = transform(supply, stack, need)
            edited = supply.image()
            new = node_of_image(edited)
            new.descriptor = mf.Descriptor(new.media_type, new.digest, len(new.raw), node.descriptor.platform)
            found.add([b.digest for b in new.blobs], supply.origin)
            return new

        if not tree.is_index:
            if not is_image(tree):
                raise UsageError(f"{tree.digest} is not an image: nothing to edit")
            return one(tree), found
        children = []
        for child in tree.children:
            if is_attestation(entry_of(child)):
                log.warning("dropped the attestation %s: it describes the image before the edit", child.digest)
                continue
            if child.is_index:
                raise UsageError(f"{tree.digest} holds an index ({child.digest}): nested indexes are not edited")
            children.append(one(child) if is_image(child) else child)
            if not is_image(child):
                found.add([b.digest for b in child.all_blobs()], blobs)
        media_type, base = _index_type(tree, children)
        new_tree = index_node(children, media_type, None, base)
        session.cache.put_bytes(new_tree.digest, new_tree.raw)
        return new_tree, found
    return edit


def needs_content(transforms: Sequence[Transform]) -> Need | None:
    """The least a source must give for these transforms (MEASURED: one reads the layers' bytes)."""
    return Need.MEASURED if any(t.needs_content for t in transforms) else None
