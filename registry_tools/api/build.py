"""build: the image of a build spec to a docker-archive file, a stream, an OCI layout or a registry."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, BinaryIO

from registry_tools.builder.image import BuiltImage, default_tag, stream_docker_archive
from registry_tools.builder.plan import plan_build
from registry_tools.builder.spec import BuildSpec
from registry_tools.engine import copy, repairing
from registry_tools.errors import UsageError
from registry_tools.fileio import AtomicFile, check_destination, check_layout_destination
from registry_tools.formats.destination import ArchiveDestination, ArchiveOptions
from registry_tools.model.digest import Digest
from registry_tools.model.image import Image
from registry_tools.session import Session


@dataclass(frozen=True)
class BuildResult:
    name: str
    tag: str
    config_digest: Digest
    manifest_digest: Digest | None  # for outputs that have a manifest (OCI layout, push)
    layers: int


def build(spec: BuildSpec, *, output: str | os.PathLike[str] | None = None, oci: str | os.PathLike[str] | None = None,
          stream: Any = None, session: Session | None = None) -> BuildResult:
    """Build the image of `spec` into one of: a docker-archive file, an OCI layout, a stream."""
    if sum(x is not None for x in (output, oci, stream)) != 1:
        raise UsageError("build needs exactly one output: a docker-archive file, an OCI layout or a stream")
    if output is not None:
        check_destination(output)
    if oci is not None:
        check_layout_destination(oci)
    own = session is None
    session = session or Session()
    try:
        if oci is not None:
            return _build_layout(spec, session, oci)
        if stream is not None:  # bytes already sent cannot be taken back: no second run
            return _build_stream(spec, session, stream)
        assert output is not None
        return repairing(session.cache, lambda: _build_archive(spec, session, output))
    finally:
        if own:
            session.close()


def _build_layout(spec: BuildSpec, session: Session, oci: str | os.PathLike[str]) -> BuildResult:
    """The built image through the copy engine into an OCI layout (layers compressed, in the cache)."""
    def tag_of(image: Image) -> str:
        return spec.tag or default_tag(image.config_raw)

    source = BuiltImage(spec, session, jobs=max(2, session.concurrency // 2))
    destination = ArchiveDestination(session.store, ArchiveOptions("oci", spec.name, spec.tag or ""), oci, tag_of)
    image, _ = copy(source, destination, session.cache)
    return BuildResult(spec.name, tag_of(image), image.config_digest, image.manifest_descriptor.digest,
                       len(image.layers))


def _build_archive(spec: BuildSpec, session: Session, output: str | os.PathLike[str]) -> BuildResult:
    out = AtomicFile(output)
    try:
        result = _build_stream(spec, session, out.file)
        out.commit()
        return result
    except BaseException:
        out.abort()
        raise


def _build_stream(spec: BuildSpec, session: Session, stream: BinaryIO) -> BuildResult:
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
