"""The OCI image layout: `oci-layout`, `index.json` and `blobs/sha256/…`.

The same documents serve the layout directory and the oci-archive, so both always
describe an image the same way.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from registry_tools.model import manifest as mf
from registry_tools.engine import BlobStore, ResolvedImage

LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

BlobSource = Union[bytes, mf.Descriptor]


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def layout_documents(image: ResolvedImage, image_name: str, tag: str) -> tuple[dict[str, bytes], dict[str, BlobSource]]:
    """(top-level files, blobs by hex digest): the manifest and config verbatim, layers as served."""
    desc: dict = {
        "mediaType": image.manifest.media_type,
        "digest": str(image.manifest_descriptor.digest),
        "size": len(image.manifest.raw),
    }
    plat = image.platform
    if plat.os and plat.architecture:
        desc["platform"] = plat.to_json()
    desc["annotations"] = {CONTAINERD_NAME: f"{image_name}:{tag}", REF_NAME: tag}
    index = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [desc]}
    docs = {"index.json": _json(index), "oci-layout": _json(LAYOUT_VERSION)}
    blobs: dict[str, BlobSource] = {
        image.manifest_descriptor.digest.hex: image.manifest.raw,
        image.config_digest.hex: image.config_raw,
    }
    for layer in image.layers:
        blobs.setdefault(layer.descriptor.digest.hex, layer.descriptor)
    return docs, blobs


def write_layout(root: Path, image: ResolvedImage, store: BlobStore, image_name: str, tag: str) -> None:
    """Fill an empty directory with the layout; modes are set explicitly so umask does not matter."""
    docs, blobs = layout_documents(image, image_name, tag)
    blob_dir = root / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    for d in (root / "blobs", blob_dir):
        os.chmod(d, 0o755)
    for digest_hex, source in sorted(blobs.items()):
        path = blob_dir / digest_hex
        if isinstance(source, bytes):
            path.write_bytes(source)
            os.chmod(path, 0o444)
        elif not store.link_verified(source, path):
            with open(path, "wb") as f:
                store.copy_verified(source, f.write, f"blob {source.digest}")
            os.chmod(path, 0o444)
    for name, data in sorted(docs.items()):
        (root / name).write_bytes(data)
        os.chmod(root / name, 0o444)
