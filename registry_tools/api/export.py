"""export: an image's root filesystem as one tar (dockerTools.exportImage, `podman export`).

Any source endpoint (a registry reference pinned by digest, a docker-archive, an
oci-archive, an OCI layout) through the copy engine, then the layers applied in order,
whiteouts and opaque directories honoured (formats.rootfs). The output's bytes depend on
the image alone; its sha256 is printed like a pull's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_tools import endpoint
from registry_tools.engine import copy
from registry_tools.errors import UsageError
from registry_tools.fileio import check_destination
from registry_tools.formats.rootfs import RootfsDestination
from registry_tools.model.digest import Digest, sri
from registry_tools.model.platform import Choice, Platform, requested
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


def export(source: str, output: str | os.PathLike[str], platform: str | Platform | None = None,
           session: Session | None = None) -> ExportResult:
    """SOURCE's root filesystem (the image for `platform`, by default this machine's) as a tar."""
    src = endpoint.parse(source, "source")
    if not src.pinned:
        raise UsageError(f"{source} is not pinned: export IMAGE@sha256:… (run `registry-tools prefetch` "
                         "to get the digest), so the output can be pinned too")
    check_destination(output)
    choice = Choice(requested(platform), False, platform is not None)
    with using(session) as s:
        image, (digest, entries) = copy(src.image(s, choice), RootfsDestination(s.cache, output), s.cache)
        return ExportResult(Path(output), image.manifest_descriptor.digest, str(image.chosen_platform), entries,
                            digest)
