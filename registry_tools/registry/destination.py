"""A registry repository as a copy destination: one image or a whole tree.

Blobs first (each from its origin: skipped after a HEAD, mounted from another repository
of the same registry, or uploaded), then the manifests children before parents, byte
for byte so every digest is kept, then the tags. What the destination holds already
costs one HEAD: when every tag asked for (or, with no tag, the digest) names the tree's
digest, nothing else is sent, because a registry accepts a manifest only once everything
it names is there, and this module pushes children before their parents.
"""
from __future__ import annotations

from typing import Callable, Sequence

from registry_tools.engine import Need, Progress
from registry_tools.errors import UsageError
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin, Image, LayerSupply
from registry_tools.model.tree import ManifestNode, annotated
from registry_tools.registry.sink import PushResult, RegistrySink, Workspace


def already_there(work: Workspace, dest: refs.Reference, digest: Digest, tags: Sequence[str]) -> bool:
    """One HEAD per tag (or one by digest): does the destination name this digest already?"""
    reg = work.registry(dest.domain)
    for ref in tags or [str(digest)]:
        if reg.manifest_digest(dest.path, ref) != digest:
            return False
    return True


def copy_tree(work: Workspace, dest: refs.Reference, node: ManifestNode, tags: Sequence[str],
              origin: BlobOrigin, progress: Progress | None = None) -> PushResult:
    """Push `node` and everything under it to `dest` (by digest, then each of `tags`); a node
    known by its descriptor alone (an entry of an index that is there already) is not pushed.
    `progress`: where the blobs' bytes are counted (default: the operation's)."""
    sink = RegistrySink(work, dest, origin, progress)
    ok = False
    try:
        blobs = node.all_blobs()
        sink.start(sum(b.size for b in blobs), len(blobs))
        # Largest first: the transfers then end close together, not with one big blob alone at the end.
        for blob in sorted(blobs, key=lambda b: -b.size):
            sink.submit(blob)
        sink.wait()
        for child in node.below():
            if child.raw:
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


class RegistryDestination:
    """A repository as a copy destination; `write` and `write_tree` return what was pushed.

    `ref` names the repository, and may name the digest the copy must have. `tags`: the tags to
    point at what is written (none: by digest alone, unless `tag_of` names one from the image).
    `annotations` are added to the manifest (or index) written, which makes it a new one.
    """

    need = Need.RELAY

    def __init__(self, work: Workspace, ref: refs.Reference, tags: Sequence[str] = (),
                 tag_of: Callable[[Image], str] | None = None, annotations: dict[str, str] | None = None,
                 progress: Progress | None = None):
        """`progress`: where the bytes sent are counted (default: the operation's)."""
        self.work = work
        self.progress = progress or work.progress
        self.ref = ref
        self.name = ref.name_only()
        self.tags = list(tags)
        self.tag_of = tag_of
        self.annotations = dict(annotations or {})

    def _reference(self, tags: Sequence[str], digest: Digest) -> str:
        return f"{self.name.name}:{tags[0]}" if tags else f"{self.name.name}@{digest}"

    def holds(self, digest: Digest) -> PushResult | None:
        if self.annotations or (self.ref.digest and self.ref.digest != str(digest)):
            return None
        if not already_there(self.work, self.name, digest, self.tags):
            return None
        return PushResult(self._reference(self.tags, digest), digest)

    def write(self, supply: LayerSupply) -> PushResult:
        """Each layer's upload starts as soon as the source has it; the manifest once all landed."""
        sink = RegistrySink(self.work, self.name, supply.origin, self.progress)
        ok = False
        try:
            for i in supply.ready():
                sink.submit(supply.layer(i).descriptor)
            image = supply.image()
            sink.submit(image.manifest.config)
            blobs = [image.manifest.config, *(layer.descriptor for layer in image.layers)]
            unique = {b.digest: b.size for b in blobs}
            sink.start(sum(unique.values()), len(unique))
            sink.wait()
            raw, media_type = image.manifest.raw, image.manifest.media_type
            if self.annotations:
                raw = mf.with_annotations(raw, media_type, self.annotations)
            self._check_digest(Digest.of_bytes(raw))
            tags = self.tags or ([self.tag_of(image)] if self.tag_of else [])
            for tag in tags or [None]:  # type: ignore[list-item]  # by digest, then each tag
                sink.result.digest = sink.put_manifest(raw, media_type, tag)
            assert sink.result.digest is not None
            sink.result.reference = self._reference(tags, sink.result.digest)
            ok = True
            return sink.result
        finally:
            sink.close(ok)

    def write_tree(self, tree: ManifestNode, blobs: BlobOrigin) -> PushResult:
        tree = annotated(tree, self.annotations)
        self._check_digest(tree.digest)
        return copy_tree(self.work, self.name, tree, self.tags, blobs, self.progress)

    def _check_digest(self, digest: Digest) -> None:
        if self.ref.digest and self.ref.digest != str(digest):
            raise UsageError(f"destination {self.ref} names digest {self.ref.digest}, but the copy is {digest}")
