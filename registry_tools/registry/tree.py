"""A manifest tree read from a registry: an index, its manifests, their configs and layers.

Every manifest is fetched by digest and verified; the tree itself (`model.tree`) is pure
data, so the same tree can be pushed to another registry or written as a layout.
"""
from __future__ import annotations

from registry_tools.errors import ManifestError
from registry_tools.model import manifest as mf
from registry_tools.model.tree import MAX_NESTING, ManifestNode, parse_node, platform_of, subset
from registry_tools.model.tree import shallow as shallow_node
from registry_tools.registry.source import RegistrySource

__all__ = ["ManifestNode", "fetch_blobs", "platform_of", "read_tree", "subset"]


def read_tree(source: RegistrySource, desc: mf.Descriptor, depth: int = 0, shallow: bool = False) -> ManifestNode:
    """The manifest `desc` names and everything under it, each manifest verified by digest. An
    index's manifests are fetched concurrently (a round trip each, `--jobs` at a time), in order;
    `shallow`: the top manifest alone, its entries known by their descriptors."""
    where = f"manifest {source.registry.domain}/{source.repo}@{desc.digest}"
    if depth > MAX_NESTING:
        raise ManifestError(f"{where}: indexes nested more than {MAX_NESTING} deep")
    raw, content_type = source.manifest_bytes(desc.digest, desc.size or None)
    node, below = parse_node(desc, raw, content_type, where)
    if shallow:
        node.children = [shallow_node(d) for d in below]
        return node
    if len(below) < 2:
        node.children = [read_tree(source, d, depth + 1) for d in below]
        return node
    with source.workers.group() as group:
        futures = [group.submit(read_tree, source, d, depth + 1) for d in below]
    node.children = [f.result() for f in futures]
    return node


def fetch_blobs(source: RegistrySource, node: ManifestNode) -> None:
    """Every blob of the tree verified into the cache, under the session's transfer limit."""
    blobs = node.all_blobs()
    source.progress.start(sum(b.size for b in blobs), len(blobs))
    with source.workers.group() as group:
        for b in blobs:
            group.submit(source.fetch_blob, b, f"blob {source.registry.domain}/{source.repo}@{b.digest}",
                         source.cancel)
    source.progress.finish()
