"""Transforms: an image edited on its way from a source to a destination, without pulling it.

A transform takes the supply of an image (its manifest, config and layers, and the origin
its blobs are read from) and gives the supply of the edited image. It is lazy: a layer it
does not touch stays the source's layer, read from the source's origin only if the
destination lacks it, so between registries an edit of the config sends one config blob
and one manifest, and an appended layer is the only layer uploaded. `each_image` edits
every image of an index the same way and writes a new index over them.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Sequence

from registry_tools.engine import Need, Transform, TreeEdit, TreeSource
from registry_tools.errors import UsageError
from registry_tools.model import manifest as mf
from registry_tools.model.image import BlobOrigin, LayerSupply
from registry_tools.model.platform import is_attestation
from registry_tools.model.tree import ManifestNode, entry_of, image_of, index_node, is_image, node_of_image
from registry_tools.session import Session
from registry_tools.store.layers import LocalLayers
from registry_tools.store.origin import Origins, read_small

log = logging.getLogger("registry_tools.transforms")


def each_image(transforms: Sequence[Transform], session: Session) -> TreeEdit:
    """An edit of a tree: every image of the index through `transforms`, under a new index (the
    old index's own fields kept). Attestations are dropped: they name the old images' digests."""
    def edit(tree: ManifestNode, source: TreeSource, blobs: BlobOrigin,
             stack: ExitStack) -> tuple[ManifestNode, BlobOrigin]:
        origins = Origins(session.cache)

        def one(node: ManifestNode) -> ManifestNode:
            image = image_of(node, read_small(blobs, node.blobs[0]))
            supply: LayerSupply = stack.enter_context(LocalLayers(image, session.store, origin=blobs))
            for transform in transforms:
                supply = transform(supply, stack)
            edited = supply.image()
            new = node_of_image(edited)
            new.descriptor = mf.Descriptor(new.media_type, new.digest, len(new.raw), node.descriptor.platform)
            origins.add([b.digest for b in new.blobs], supply.origin)
            return new

        if not tree.is_index:
            if not is_image(tree):
                raise UsageError(f"{tree.digest} is not an image: nothing to edit")
            return one(tree), origins
        children = []
        for child in tree.children:
            if is_attestation(entry_of(child)):
                log.warning("dropped the attestation %s: it describes the image before the edit", child.digest)
                continue
            if child.is_index:
                raise UsageError(f"{tree.digest} holds an index ({child.digest}): nested indexes are not edited")
            children.append(one(child) if is_image(child) else child)
            if not is_image(child):
                origins.add([b.digest for b in child.all_blobs()], blobs)
        base = {k: v for k, v in tree.doc.items() if k != "manifests"}
        new_tree = index_node(children, tree.media_type, None, base)
        session.cache.put_bytes(new_tree.digest, new_tree.raw)
        return new_tree, origins
    return edit


def needs_content(transforms: Sequence[Transform]) -> Need | None:
    """The least a source must give for these transforms (MEASURED: one reads the layers' bytes)."""
    return Need.MEASURED if any(t.needs_content for t in transforms) else None
