"""A whole manifest tree into a registry repository: blobs, then manifests, then the tags.

What the destination holds already costs one HEAD: when every tag asked for (or, with no
tag, the top manifest's digest) already names the tree's digest, nothing else is sent,
because a registry accepts a manifest only once everything it names is there, and this
module pushes children before their parents. Otherwise each blob is skipped after a
HEAD, mounted from another repository of the same registry, or streamed from its origin.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from registry_tools.engine import Progress
from registry_tools.errors import RegistryToolsError, UsageError
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.image import LAYER_KEY, Layer
from registry_tools.model.platform import Platform
from registry_tools.registry import upload
from registry_tools.registry.destination import PushResult, RegistrySink, Workspace
from registry_tools.registry.referrers import entry_of, fallback_tag, list_referrers, update_fallback
from registry_tools.registry.relay import BlobOrigin, RelayedBlobs
from registry_tools.registry.source import RegistrySource
from registry_tools.registry.tree import ManifestNode, read_tree, subset


def already_there(work: Workspace, dest: refs.Reference, digest: Digest, tags: list[str]) -> bool:
    """One HEAD per tag (or one by digest): does the destination name this tree already?"""
    reg = work.registry(dest.domain)
    for ref in tags or [str(digest)]:
        if reg.manifest_digest(dest.path, ref) != digest:
            return False
    return True


@dataclass
class Replica:
    """What a copy between registries did: the tree (None when one HEAD showed it was there)."""

    tree: ManifestNode | None
    pushed: PushResult
    up_to_date: bool


def replicate(work: Workspace, origin: RegistrySource, digest: Digest, dest: refs.Reference, tags: list[str],
              progress: Progress, platforms: Sequence[Platform] = ()) -> Replica:
    """The tree `digest` names in `origin` (or the subset for `platforms`) into `dest`, tagged;
    blobs streamed from the origin. `dest` naming a digest: the copy must have that digest."""
    target = dest.name_only()
    if not platforms and not (dest.digest and dest.digest != str(digest)) and \
            already_there(work, target, digest, tags):  # one HEAD, nothing read
        return Replica(None, PushResult(f"{target.name}@{digest}", digest), True)
    tree = read_tree(origin, mf.Descriptor("", digest, 0))
    if platforms:
        tree = subset(tree, list(platforms))
    if dest.digest and dest.digest != str(tree.digest):
        raise UsageError(f"destination {dest} names digest {dest.digest}, but the copy is {tree.digest}")
    if platforms and already_there(work, target, tree.digest, tags):
        return Replica(tree, PushResult(f"{target.name}@{tree.digest}", tree.digest), True)
    progress.start(tree.size, len(tree.all_blobs()))
    pushed = copy_tree(work, target, tree, tags, RelayedBlobs(origin, progress))
    progress.finish()
    return Replica(tree, pushed, False)


def copy_tree(work: Workspace, dest: refs.Reference, node: ManifestNode, tags: list[str],
              origin: BlobOrigin) -> PushResult:
    """Push `node` and everything under it to `dest` (by digest, then each of `tags`)."""
    sink = RegistrySink(work, dest, origin)
    ok = False
    try:
        # Largest first: the transfers then end close together, not with one big blob alone at the end.
        for blob in sorted(node.all_blobs(), key=lambda b: -b.size):
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
                replicate(work, origin, digest, target, [tag], progress)
                if digest not in copied:
                    copied.append(digest)
        new = []
        for desc in list_referrers(origin, subject).descriptors:
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            node = read_tree(origin, desc)
            copy_tree(work, target, node, [], RelayedBlobs(origin, progress))
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
