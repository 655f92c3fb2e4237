"""push: built images, archives and layouts straight to a registry; no tarball in between.

A push is a copy whose destination is a registry: the source endpoint's tree (an index
with everything under it, or one image) through the engine's tree writer. A build goes
the same way, its layers uploaded as each is packed.
"""
from __future__ import annotations

from registry_tools import endpoint
from registry_tools.api.build import IndexBuildResult, build_images, index_result
from registry_tools.builder.image import BuiltImage, RemoteLayers, default_tag
from registry_tools.builder.multispec import MultiSpec
from registry_tools.builder.spec import BuildSpec
from registry_tools.engine import HeldTree, copy, copy_tree
from registry_tools.errors import UsageError
from registry_tools.model import reference as refs
from registry_tools.model.image import Image
from registry_tools.model.tree import ManifestNode, shallow
from registry_tools.registry.destination import RegistryDestination
from registry_tools.registry.mirror import known_layers
from registry_tools.registry.sink import PushResult
from registry_tools.session import Session, using
from registry_tools.store.origin import CachedBlobs


def registry_target(dest: str) -> refs.Reference:
    """DEST of a push: a registry repository and tag, named as every command that writes to a
    registry names it (a host, or docker:// for Docker Hub)."""
    target = endpoint.parse(dest, "destination")
    if target.repository is None:
        raise UsageError(f"{dest} is not a registry reference: push writes to a registry (copy writes files)")
    if target.repository.digest:
        raise UsageError(f"push destination {dest} names a digest; give a tag (or none, for latest)")
    return target.repository


def build_and_push(spec: BuildSpec, dest: str, session: Session) -> tuple[PushResult, Image]:
    """Uploads start as soon as each layer is packed: both cores compress while the network sends.
    The tag: the destination's, else the spec's, else a hash of the image's config."""
    ref = registry_target(dest)
    tag = ref.tag or spec.tag
    target = RegistryDestination(session, ref, [tag] if tag else [], lambda image: default_tag(image.config_raw))
    # what the registry holds under that tag already, by layer input key: an empty cache packs only the rest
    remote = RemoteLayers(lambda: known_layers(session, ref, tag))
    image, result = copy(BuiltImage(spec, session, jobs=2, remote=remote), target, session.cache)
    return result, image


def build_and_push_index(multi: MultiSpec, dest: str, session: Session) -> tuple[PushResult, IndexBuildResult]:
    """Each platform pushed by digest as it is built (uploads start as layers are packed; a layer
    another platform pushed already is found by its HEAD), then the index and its tag."""
    ref = registry_target(dest)
    remote = RemoteLayers(lambda: known_layers(session, ref, ref.tag or multi.tag))
    tree, packed, pushed = build_images(multi, session, lambda _: RegistryDestination(session, ref.name_only()),
                                        remote)
    tag = ref.tag or multi.tag or default_tag(tree.raw)
    index = ManifestNode(tree.descriptor, tree.raw, tree.media_type, [], [shallow(c.descriptor) for c in tree.children],
                         tree.doc)  # each image is there already: the index alone goes now
    total = copy_tree(HeldTree(index, CachedBlobs(session.cache)), RegistryDestination(session, ref, [tag]),
                      session.cache).result
    for r in pushed:
        total.uploaded += r.uploaded
        total.mounted += r.mounted
        total.present += r.present
        total.manifests_put += r.manifests_put
        total.bytes_uploaded += r.bytes_uploaded
    return total, index_result(multi, tree, tag, packed)


def push(source: str, dest: str, session: Session | None = None,
         annotations: dict[str, str] | None = None) -> PushResult:
    """`registry-tools push SOURCE DEST`: SOURCE any source endpoint (a layout dir, DIR:TAG, an
    archive; an index is pushed whole); `annotations` are added to the manifest (or index) pushed,
    which makes it a new one. The tag: DEST's, else latest."""
    src = endpoint.parse(source, "source")
    ref = registry_target(dest)
    with using(session) as s:
        target = RegistryDestination(s, ref, [ref.tag or "latest"], annotations=annotations)
        return copy_tree(src.tree(s), target, s.cache).result


__all__ = ["PushResult", "build_and_push", "push", "registry_target"]
