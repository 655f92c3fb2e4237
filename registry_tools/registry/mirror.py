"""What a mirror of a tree takes along, and what a push can learn from what is there.

`copy_referrers`: everything that refers to a copied tree (signatures, SBOMs,
attestations, recursively) and cosign's legacy tags, each through the copy engine.
`known_layers`: the layers an image at the destination holds, by their input keys, so a
push from an empty cache need not pack them again.
"""
from __future__ import annotations

import logging

from registry_tools.engine import Progress, copy_tree as engine_copy_tree
from registry_tools.errors import RegistryToolsError
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.image import LAYER_KEY, Layer
from registry_tools.registry import upload
from registry_tools.registry.destination import RegistryDestination, copy_tree
from registry_tools.registry.referrers import entry_of, fallback_tag, list_referrers, update_fallback
from registry_tools.registry.relay import RelayedBlobs
from registry_tools.registry.remote import RegistryTree
from registry_tools.registry.sink import Workspace
from registry_tools.registry.source import RegistrySource
from registry_tools.registry.tree import ManifestNode, read_tree


log = logging.getLogger("registry_tools.mirror")
COSIGN_SUFFIXES = (".sig", ".att", ".sbom")  # cosign's tags beside an image, before OCI 1.1 referrers


def copy_referrers(work: Workspace, origin: RegistrySource, dest: refs.Reference, tree: ManifestNode,
                   progress: Progress) -> list[Digest]:
    """Everything that refers to a manifest of `tree` (recursively: signatures of SBOMs too), and
    cosign's legacy `sha256-<hex>.sig/.att/.sbom` tags, into `dest`; the destination's referrers
    index (its API, else its fallback tag) updated. Returns the digests of what was copied."""
    target = dest.name_only()
    dest_reg = work.registry(target.domain)
    copied: list[Digest] = []
    seen: set[Digest] = set()
    pending = [n.digest for n in [*tree.below(), tree]]
    while pending:
        subject = pending.pop(0)
        for tag in (fallback_tag(subject) + s for s in COSIGN_SUFFIXES):
            digest = origin.registry.manifest_digest(origin.repo, tag)
            if digest is not None:
                engine_copy_tree(RegistryTree(origin, None, digest), RegistryDestination(work, target, [tag]),
                                 work.cache)
                if digest not in copied:
                    copied.append(digest)
        new = []
        for desc in list_referrers(origin, subject).descriptors:
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            node = read_tree(origin, desc)
            copy_tree(work, target, node, [], RelayedBlobs(origin), progress)
            new.append(node)
            pending.append(desc.digest)
        if new:  # what the destination does not list by itself (no referrers API there) goes in its fallback index
            listed = {d.digest for d in list_referrers(work.source(target), subject).descriptors}
            for node in new:
                if node.digest not in listed:
                    update_fallback(dest_reg, target.path, subject, entry_of(node.raw, node.doc))
                if node.digest not in copied:
                    copied.append(node.digest)
    return copied



def known_layers(work: Workspace, dest: refs.Reference, tag: str | None) -> dict[str, Layer]:
    """The layers the image tagged `tag` at `dest` holds, by the input key its descriptors record
    (every platform of an index), each checked by a HEAD: what a push from an empty cache need not
    pack. Nothing (an empty map) where there is no such image or it cannot be read."""
    if not tag:
        return {}
    target = dest.name_only()
    reg = work.registry(target.domain)
    try:
        digest = reg.manifest_digest(target.path, tag)
        if digest is None:
            return {}
        source = work.source(target)
        tree = read_tree(source, mf.Descriptor("", digest, 0))
        out: dict[str, Layer] = {}
        for node in [tree, *tree.below()]:
            layers = node.doc.get("layers")
            if node.is_index or not node.blobs or not isinstance(layers, list):
                continue
            config = mf.parse_config(source.blob_bytes(node.blobs[0], f"config {node.blobs[0].digest}"), "config")
            ids = mf.diff_ids(config, f"config {node.blobs[0].digest}")
            for desc, diff_id in zip(node.blobs[1:], ids, strict=False):
                key = desc.annotations.get(LAYER_KEY)
                if key and key not in out and upload.blob_exists(reg, target.path, desc.digest, desc.size):
                    out[key] = Layer(desc, diff_id)
        return out
    except RegistryToolsError as e:
        log.info("could not read what %s holds (%s); packing every layer", target, e)
        return {}
