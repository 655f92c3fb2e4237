"""export: an image's root filesystem as one tar (dockerTools.exportImage, `podman export`).

Any source `copy` reads (a registry reference pinned by digest, a docker-archive, an
oci-archive, an OCI layout) through the copy engine, then the layers applied in order to the
model of formats.rootfs (whiteouts and opaque directories honoured, nothing left under a
symbolic link, hard links only to what the output holds). The output's bytes depend on the
image alone; its sha256 is printed like a pull's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_tools.api.copy import endpoint
from registry_tools.engine import copy
from registry_tools.errors import UsageError
from registry_tools.fileio import check_destination
from registry_tools.formats.docker_archive import DockerArchiveImage
from registry_tools.formats.oci_layout import LayoutImage
from registry_tools.formats.rootfs import RootfsDestination
from registry_tools.model.digest import Digest, sri
from registry_tools.model.platform import Choice, Platform, requested
from registry_tools.registry.source import RegistryImage
from registry_tools.session import Session, using


@dataclass(frozen=True)
class ExportResult:
    output: Path
    manifest_digest: Digest
    platform: str
    entries: int
    sha256: bytes

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.output), "manifestDigest": str(self.manifest_digest), "platform": self.platform,
                "entries": self.entries, "hash": sri(self.sha256)}


def export(source: str, output: str | os.PathLike[str], *, platform: str | Platform | None = None,
           session: Session | None = None) -> ExportResult:
    src = endpoint(source, "source")
    check_destination(output)
    wanted = requested(platform) if platform else None
    with using(session) as session:
        where = f"source {src}"
        image_source: Any
        if src.kind == "registry":
            assert src.ref is not None
            if not src.ref.digest:
                raise UsageError(f"{source} is not pinned: export IMAGE@sha256:… (run `registry-tools prefetch` "
                                 "to get the digest), so the output can be pinned too")
            image_source = RegistryImage(session.source(src.ref), Digest.parse(src.ref.digest),
                                         Choice(requested(platform), False, platform is not None))
        elif src.kind == "docker-archive":
            assert src.path is not None
            image_source = DockerArchiveImage(src.path, session.store, src.name, where=where)
        else:
            assert src.path is not None
            if not src.path.exists():
                raise UsageError(f"source {source} does not exist")
            image_source = LayoutImage(src.path, session.store, src.name, wanted or requested(None), where=where)
        image, (digest, entries) = copy(image_source, RootfsDestination(session.cache, output), session.cache)
        return ExportResult(Path(output), image.manifest_descriptor.digest, str(image.chosen_platform), entries,
                            digest)
