"""push: built images, archives and layouts straight to a registry; no tarball in between.

A registry is a destination like any other (registry.destination): this module only
picks the source (an OCI layout directory or oci-archive, a docker-archive, or a build
spec) and the tag, and runs the copy. A layout that names an index is pushed whole.
"""
from __future__ import annotations

import os
from pathlib import Path

from registry_tools.builder.image import BuiltImage, RemoteLayers, default_tag
from registry_tools.api.build import IndexBuildResult, build_images, index_result
from registry_tools.builder.multispec import MultiSpec
from registry_tools.builder.spec import BuildSpec
from registry_tools.engine import copy, repairing
from registry_tools.errors import UsageError
from registry_tools.formats.docker_archive import DockerArchiveImage, is_docker_archive
from registry_tools.formats.oci_layout import LayoutImage, LayoutReader
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.image import Image
from registry_tools.model.tree import annotated
from registry_tools.registry.destination import PushResult, RegistryDestination, RegistrySink
from registry_tools.registry.mirror import copy_tree, known_layers
from registry_tools.registry.relay import CachedBlobs
from registry_tools.session import Session


def destination(dest: str, session: Session, tag: str | None = None) -> RegistryDestination:
    """REGISTRY/REPOSITORY[:TAG] as a destination; `tag` applies when the reference names none."""
    ref = refs.parse_normalized(dest)
    if ref.digest:
        raise UsageError(f"push destination {dest} names a digest; give a tag (or none, for latest)")
    return RegistryDestination(session, ref, ref.tag or tag)


def build_and_push(spec: BuildSpec, dest: str, session: Session) -> tuple[PushResult, Image]:
    """Uploads start as soon as each layer is packed: both cores compress while the network sends.
    The tag: the destination's, else the spec's, else a hash of the image's config."""
    target = destination(dest, session, spec.tag)
    target.tag_of = lambda image: default_tag(image.config_raw)
    # what the registry holds under that tag already, by layer input key: an empty cache packs only the rest
    remote = RemoteLayers(lambda: known_layers(session, target.ref, target.tag))
    image, result = copy(BuiltImage(spec, session, jobs=2, remote=remote), target, session.cache)
    return result, image


def build_and_push_index(multi: MultiSpec, dest: str, session: Session) -> tuple[PushResult, IndexBuildResult]:
    """Each platform pushed by digest as it is built (uploads start as layers are packed; a layer
    another platform pushed already is found by its HEAD), then the index and its tag."""
    ref = refs.parse_normalized(dest)
    if ref.digest:
        raise UsageError(f"push destination {dest} names a digest; give a tag (or none)")
    remote = RemoteLayers(lambda: known_layers(session, ref, ref.tag or multi.tag))
    tree, packed, pushed = build_images(multi, session, lambda _: RegistryDestination(session, ref, None,
                                                                                       by_digest=True), remote)
    tag = ref.tag or multi.tag or default_tag(tree.raw)
    sink = RegistrySink(session, ref)
    try:
        sink.result.digest = sink.put_manifest(tree.raw, tree.media_type, tag)
    finally:
        sink.close(True)
    total = sink.result
    total.reference = f"{ref.name}:{tag}"
    for r in pushed:
        total.uploaded += r.uploaded
        total.mounted += r.mounted
        total.present += r.present
        total.manifests_put += r.manifests_put
        total.bytes_uploaded += r.bytes_uploaded
    return total, index_result(multi, tree, tag, packed)


def _push_index(layout: LayoutReader, desc: mf.Descriptor, target: RegistryDestination,
                session: Session) -> PushResult | None:
    """A layout entry that is an index: the whole tree (every image, nested index and attestation it
    names, each verified into the cache), then the index and its tag (None: not an index)."""
    doc = layout.document(desc, session.cache)
    if not isinstance(doc, mf.Index):
        return None
    tree = annotated(layout.tree(desc, session.cache), target.annotations)
    tag = target.tag or "latest"
    return copy_tree(session, target.ref.name_only(), tree, [tag], CachedBlobs(session.cache))


def _push_once(path: Path, name: str | None, dest: str, session: Session,
               annotations: dict[str, str]) -> PushResult:
    where = f"push source {path}"
    target = destination(dest, session)
    target.annotations = annotations
    if path.is_file() and is_docker_archive(path, where):
        return copy(DockerArchiveImage(path, session.store, name, where=where), target, session.cache)[1]
    with LayoutReader(path, where) as layout:
        entries = layout.entries(name)
        if len(entries) != 1:
            raise UsageError(f"{where}: holds {len(entries)} images" +
                             ("; name one as SOURCE:TAG" if len(entries) > 1 else ""))
        pushed = _push_index(layout, entries[0], target, session)
    if pushed is not None:
        return pushed
    return copy(LayoutImage(path, session.store, name, where=where), target, session.cache)[1]


def push(source: str, dest: str, session: Session | None = None,
         annotations: dict[str, str] | None = None) -> PushResult:
    """`registry-tools push SOURCE DEST`: SOURCE is a layout dir (optionally DIR:TAG) or an archive;
    `annotations` are added to the manifest (or index) pushed, which makes it a new one."""
    own = session is None
    session = session or Session()
    try:
        name = None
        if not os.path.exists(source) and ":" in source:
            source, _, name = source.rpartition(":")
        path = Path(source)
        if not path.exists():
            raise UsageError(f"push source {source} does not exist")
        # A blob found damaged in the cache is imported again from the source on the second run.
        return repairing(session.cache, lambda: _push_once(path, name, dest, session, dict(annotations or {})))
    finally:
        if own:
            session.close()


__all__ = ["PushResult", "RegistrySink", "build_and_push", "destination", "push"]
