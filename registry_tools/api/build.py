"""build: the image of a build spec to a docker-archive file, a stream, an oci-archive, an OCI
layout or a registry; a spec naming several platforms builds one image each and an index.

A multi-platform build packs the platforms one after the other through the same cache,
so a layer identical across platforms (the same store paths, the same content) is packed
once and found by its inputs for the next platform; pushed, it is uploaded once (the
next platform's HEAD finds it there).
"""
from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import IO, Any, Callable

from registry_tools.builder.image import BuiltImage, RemoteLayers, default_tag, stream_docker_archive
from registry_tools.builder.plan import plan_build
from registry_tools.builder.multispec import MultiSpec
from registry_tools.builder.spec import BuildSpec
from registry_tools import endpoint
from registry_tools.engine import HeldTree, Need, copy, copy_tree, repairing
from registry_tools.errors import UsageError
from registry_tools.fileio import replacing
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin, Layer, LayerSupply
from registry_tools.model.tree import ManifestNode, index_node, node_of_image, platform_of
from registry_tools.session import Session, using
from registry_tools.store.origin import CachedBlobs

BUILD_FORMATS = ("docker-archive", "oci-archive")


@dataclass(frozen=True)
class BuildResult:
    name: str
    tag: str
    config_digest: Digest
    manifest_digest: Digest | None  # for outputs that have a manifest (OCI layout, oci-archive, push)
    layers: int


@dataclass(frozen=True)
class IndexBuildResult:
    """A multi-platform build: the index and one image per platform."""

    name: str
    tag: str
    index_digest: Digest
    images: dict[str, Digest] = field(default_factory=dict)  # platform -> manifest digest
    layers_packed: int = 0  # layers packed by this run (the others were found in the cache)
    bytes_packed: int = 0  # their compressed size


def single_platform(spec: BuildSpec | MultiSpec, output: str, format: str) -> BuildSpec:
    if isinstance(spec, MultiSpec):
        if format == "docker-archive":
            raise UsageError(f"a docker-archive holds one platform and the spec names {len(spec.specs)} "
                             f"({', '.join(spec.platforms)}): write an oci-archive (--format oci-archive), a "
                             "layout (--oci DIR) or push, or build one with --platform")
        raise UsageError(f"{output} takes one image; the spec names {', '.join(spec.platforms)}")
    return spec


def build(spec: BuildSpec | MultiSpec, *, output: str | os.PathLike[str] | None = None,
          oci: str | os.PathLike[str] | None = None, stream: Any = None, session: Session | None = None,
          format: str = "docker-archive") -> BuildResult | IndexBuildResult:
    """Build `spec` into one of: an archive file (`format` docker-archive or oci-archive), an OCI
    layout, a stream (docker-archive). A multi-platform spec writes an index (layout or oci-archive)."""
    if sum(x is not None for x in (output, oci, stream)) != 1:
        raise UsageError("build needs exactly one output: a docker-archive file, an OCI layout or a stream")
    if format not in BUILD_FORMATS:
        raise UsageError(f"build writes a {' or an '.join(BUILD_FORMATS)} file (or --oci DIR), not {format!r}")
    out = endpoint.output(oci, "oci") if oci is not None else endpoint.output(output, format) if output else None
    if out is not None:
        out.check()
    if stream is not None:
        spec = single_platform(spec, "--stream", "docker-archive")
    elif output is not None and format == "docker-archive":
        spec = single_platform(spec, str(output), format)
    with using(session) as s:
        if isinstance(spec, MultiSpec):
            assert out is not None
            return _build_index_files(spec, s, out)
        if stream is not None:  # bytes already sent cannot be taken back: no second run
            return _build_stream(spec, s, stream)
        assert out is not None and output is not None or oci is not None
        if oci is not None or format == "oci-archive":
            assert out is not None
            return _build_layout(spec, s, out)
        assert output is not None
        return repairing(s.cache, lambda: _build_archive(spec, s, output))


def _writing(spec: BuildSpec | MultiSpec) -> endpoint.Writing:
    return endpoint.Writing(spec.name, spec.tag or "", tag_of=lambda image: spec.tag or default_tag(image.config_raw))


def _build_layout(spec: BuildSpec, session: Session, out: endpoint.FileEndpoint) -> BuildResult:
    """The built image through the copy engine into an OCI layout or oci-archive (layers compressed,
    in the cache)."""
    source = BuiltImage(spec, session)
    image, _ = copy(source, out.destination(session, _writing(spec)), session.cache)
    return BuildResult(spec.name, spec.tag or default_tag(image.config_raw), image.config_digest,
                       image.manifest_descriptor.digest, len(image.layers))


def _build_archive(spec: BuildSpec, session: Session, output: str | os.PathLike[str]) -> BuildResult:
    with replacing(Path(output)) as f:
        return _build_stream(spec, session, f)


def _build_stream(spec: BuildSpec, session: Session, stream: IO[bytes]) -> BuildResult:
    """streamLayeredImage: an uncompressed docker-archive, each layer packed straight into it."""
    plan = plan_build(spec, session)
    try:
        ref, config_digest = stream_docker_archive(plan, session, stream.write)
        stream.flush()
        name, _, tag = ref.rpartition(":")
        n = (len(plan.base.layers) if plan.base else 0) + len(plan.layers)
        return BuildResult(name, tag, Digest.parse(config_digest), None, n)
    finally:
        plan.close()


# --- several platforms: one image each, one index -------------------------------------------

class _Stored:
    """A destination that only waits for the image: its blobs are in the cache."""

    need = Need.STREAM

    def holds(self, digest: Digest) -> None:
        return None

    def write(self, supply: LayerSupply) -> None:
        for _ in supply.ready():
            pass
        supply.image()

    def write_tree(self, tree: ManifestNode, blobs: BlobOrigin) -> None:
        return None


def build_images(multi: MultiSpec, session: Session, destination: Callable[[BuildSpec], Any] = lambda _: _Stored(),
                 remote: RemoteLayers | None = None) -> tuple[ManifestNode, list[Layer], list[Any]]:
    """Each platform's image, one after the other (each into `destination`), and the index over
    them; the layers this run packed (a layer shared by platforms is packed once); and what each
    destination said."""
    nodes, packed, said = [], [], []
    for spec in multi.specs:
        source = BuiltImage(spec, session, remote=remote)
        image, result = copy(source, destination(spec), session.cache)
        nodes.append(node_of_image(image))
        packed += source.packed
        said.append(result)
    tree = index_node(nodes, mf.OCI_INDEX, multi.annotations)
    session.cache.put_bytes(tree.digest, tree.raw)
    return tree, packed, said


def index_result(multi: MultiSpec, tree: ManifestNode, tag: str, packed: list[Layer]) -> IndexBuildResult:
    return IndexBuildResult(multi.name, tag, tree.digest, {platform_of(c): c.digest for c in tree.children},
                            len(packed), sum(layer.descriptor.size for layer in packed))


def _build_index_files(multi: MultiSpec, session: Session, out: endpoint.FileEndpoint) -> IndexBuildResult:
    tree, packed, _ = build_images(multi, session)
    tag = multi.tag or default_tag(tree.raw)
    destination = out.destination(session, endpoint.Writing(multi.name, tag))
    copy_tree(HeldTree(tree, CachedBlobs(session.cache)), destination, session.cache)
    return index_result(multi, tree, tag, packed)


def write_sbom(spec: BuildSpec, tag: str, path: str | os.PathLike[str]) -> None:
    """The build's SPDX 2.3 SBOM (builder.sbom) at `path`, written beside it and renamed."""
    from registry_tools.builder.sbom import spdx_document

    with replacing(Path(path)) as f:
        f.write(spdx_document(spec, tag))
