"""A whole manifest tree into a registry repository: blobs, then manifests, then the tags.

What the destination holds already costs one HEAD: when every tag asked for (or, with no
tag, the top manifest's digest) already names the tree's digest, nothing else is sent,
because a registry accepts a manifest only once everything it names is there, and this
module pushes children before their parents. Otherwise each blob is skipped after a
HEAD, mounted from another repository of the same registry, or streamed from its origin.
"""
from __future__ import annotations

from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.registry.destination import PushResult, RegistrySink, Workspace
from registry_tools.registry.relay import BlobOrigin
from registry_tools.registry.tree import ManifestNode


def already_there(work: Workspace, dest: refs.Reference, digest: Digest, tags: list[str]) -> bool:
    """One HEAD per tag (or one by digest): does the destination name this tree already?"""
    reg = work.registry(dest.domain)
    for ref in tags or [str(digest)]:
        if reg.manifest_digest(dest.path, ref) != digest:
            return False
    return True


def copy_tree(work: Workspace, dest: refs.Reference, node: ManifestNode, tags: list[str],
              origin: BlobOrigin) -> PushResult:
    """Push `node` and everything under it to `dest` (by digest, then each of `tags`)."""
    result = PushResult(f"{dest.name}@{node.digest}", node.digest)
    if already_there(work, dest, node.digest, tags):
        return result
    sink = RegistrySink(work, dest, origin)
    ok = False
    try:
        for blob in node.all_blobs():
            sink.submit(blob)
        sink.wait()
        for child in node.below():
            sink.put_manifest(child.raw, child.media_type, None)
        sink.put_manifest(node.raw, node.media_type, None)
        for tag in tags:
            sink.put_manifest(node.raw, node.media_type, tag)
        sink.result.digest = node.digest
        sink.result.reference = f"{dest.name}:{tags[0]}" if tags else f"{dest.name}@{node.digest}"
        ok = True
        return sink.result
    finally:
        sink.close(ok)
