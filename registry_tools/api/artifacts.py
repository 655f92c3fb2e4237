"""Artifacts and referrers: files attached to an image (OCI 1.1 `subject`), and listing what
refers to an image.

`attach` pushes an artifact manifest (image-spec 1.1: `artifactType`, the empty config
descriptor, one layer per file titled with its name, `subject` naming the image) and,
where the registry lacks the referrers API, adds it to the subject's fallback index.
Nothing is filled from the clock: the same files give the same manifest digest.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_tools import endpoint
from registry_tools.errors import UsageError
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.manifest import canonical_json
from registry_tools.registry.sink import RegistrySink
from registry_tools.registry.referrers import Referrers, list_referrers, put_referrer
from registry_tools.registry.source import RegistrySource
from registry_tools.session import Session, using

EMPTY_JSON = b"{}"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": str(Digest.of_bytes(EMPTY_JSON)), "size": 2}
TITLE = "org.opencontainers.image.title"
DEFAULT_FILE_TYPE = "application/octet-stream"


@dataclass
class AttachResult:
    reference: str
    digest: Digest
    subject: Digest
    artifact_type: str
    files: int

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": str(self.digest), "subject": str(self.subject),
                "artifactType": self.artifact_type, "files": self.files}


def subject_descriptor(source: RegistrySource, ref: refs.Reference) -> dict[str, Any]:
    """The descriptor of what REF names (resolved, fetched and verified), as a `subject`."""
    digest = Digest.parse(ref.digest) if ref.digest else source.resolve_tag(ref.tag or "latest")
    raw, ctype = source.manifest_bytes(digest)
    doc = mf.load_json(raw, f"manifest {digest}")
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    media_type = declared if isinstance(declared, str) and declared else (
        ctype.split(";")[0].strip() or mf.guess_media_type(raw))
    return {"mediaType": media_type, "digest": str(digest), "size": len(raw)}


def _file_blob(text: str, session: Session) -> dict[str, Any]:
    """FILE[:MEDIATYPE] hashed, then imported into the cache (checked against that hash)."""
    path_text, media_type = text, DEFAULT_FILE_TYPE
    if not os.path.exists(text) and ":" in text:
        path_text, _, media_type = text.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"{path_text} is not a file")
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    digest = Digest("sha256", h.hexdigest())
    with open(path, "rb") as f:
        session.cache.import_stream(f, digest, size, str(path))
    return {"mediaType": media_type, "digest": str(digest), "size": size, "annotations": {TITLE: path.name}}


def attach(image: str, artifact_type: str, files: list[str], *, annotations: dict[str, str] | None = None,
           session: Session | None = None) -> AttachResult:
    """`attach REF --artifact-type T FILE...`: an artifact naming REF's manifest as its subject."""
    if not artifact_type or "/" not in artifact_type:
        raise UsageError("--artifact-type takes a media type, e.g. application/spdx+json")
    if not files:
        raise UsageError("name at least one file to attach")
    with using(session) as session:
        ref = endpoint.written_reference(image)
        source = session.source(ref.name_only())
        subject = subject_descriptor(source, ref)
        layers = [_file_blob(f, session) for f in files]
        session.cache.put_bytes(Digest.of_bytes(EMPTY_JSON), EMPTY_JSON)
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "artifactType": artifact_type,
                               "config": EMPTY, "layers": layers, "subject": subject}
        if annotations:
            doc["annotations"] = dict(sorted(annotations.items()))
        raw = canonical_json(doc)
        sink = RegistrySink(session, ref.name_only())
        ok = False
        try:
            for blob in [EMPTY, *layers]:
                sink.submit(mf.Descriptor.from_json(blob, "artifact"))
            sink.wait()
            digest = put_referrer(sink.registry, sink.repo, raw, mf.OCI_MANIFEST)
            ok = True
        finally:
            sink.close(ok)
        return AttachResult(f"{ref.name_only()}@{digest}", digest, Digest.parse(subject["digest"]), artifact_type,
                            len(layers))


def referrers(image: str, *, artifact_type: str | None = None, session: Session | None = None) -> Referrers:
    """`referrers REF`: what refers to the manifest REF names."""
    with using(session) as session:
        ref = refs.parse_normalized(image)
        source = session.source(ref.name_only())
        digest = Digest.parse(ref.digest) if ref.digest else source.resolve_tag(ref.tag or "latest")
        return list_referrers(source, digest, artifact_type)
