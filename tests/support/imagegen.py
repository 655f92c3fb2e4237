"""Build small OCI image layouts for tests, the demo and benchmarks, deterministically.

Images are made from in-memory file trees or from directories; layers can be gzip,
zstd or uncompressed; an index can carry an attestation entry like buildx writes.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
DOCKER_LAYER_TYPES = {
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "none": "application/vnd.docker.image.rootfs.diff.tar",
}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


@dataclass
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha(self.data)

    def descriptor(self, **extra) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        d.update(extra)
        return d


class Layout:
    """An OCI layout being assembled in memory, then written to a directory."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.refs: list[dict] = []

    def add(self, blob: Blob) -> Blob:
        self.blobs[blob.digest] = blob.data
        return blob

    def layer(self, files: dict[str, bytes], compression: str = "gzip", docker: bool = False) -> tuple[Blob, str]:
        raw = tar_of(files)
        types = DOCKER_LAYER_TYPES if docker else LAYER_TYPES
        return self.add(Blob(types[compression], compress(raw, compression))), sha(raw)

    def image(self, layers: list[tuple[Blob, str]], os_: str = "linux", arch: str = "amd64", variant: str = "",
              config_extra: dict | None = None, docker: bool = False) -> Blob:
        config = {
            "architecture": arch, "os": os_,
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
        }
        if variant:
            config["variant"] = variant
        config.update(config_extra or {})
        cfg_type = "application/vnd.docker.container.image.v1+json" if docker else OCI_CONFIG
        cfg = self.add(Blob(cfg_type, json.dumps(config, sort_keys=True).encode()))
        man_type = "application/vnd.docker.distribution.manifest.v2+json" if docker else OCI_MANIFEST
        manifest = {"schemaVersion": 2, "mediaType": man_type, "config": cfg.descriptor(),
                    "layers": [b.descriptor() for b, _ in layers]}
        return self.add(Blob(man_type, json.dumps(manifest, indent=2).encode()))

    def attestation(self, subject: Blob) -> Blob:
        statement = self.add(Blob("application/vnd.in-toto+json", b'{"_type":"https://in-toto.io/Statement/v0.1"}'))
        cfg = self.add(Blob(OCI_CONFIG, b'{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":["' + sha(statement.data).encode() + b'"]}}'))
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg.descriptor(),
                    "layers": [statement.descriptor(annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"})]}
        return self.add(Blob(OCI_MANIFEST, json.dumps(manifest, indent=2).encode()))

    def index(self, entries: list[tuple[Blob, dict | None, dict | None]]) -> Blob:
        manifests = []
        for blob, platform, notes in entries:
            d = blob.descriptor()
            if platform is not None:
                d["platform"] = platform
            if notes:
                d["annotations"] = notes
            manifests.append(d)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.add(Blob(OCI_INDEX, json.dumps(index, indent=2).encode()))

    def tag(self, blob: Blob, name: str) -> None:
        self.refs.append(blob.descriptor(annotations={"org.opencontainers.image.ref.name": name}))

    def write(self, path: str | os.PathLike[str]) -> Path:
        root = Path(path)
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        for digest, data in self.blobs.items():
            (root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                     "manifests": self.refs}))
        return root


def write_dir_transport(lay: Layout, manifest: Blob, path: str | os.PathLike[str]) -> Path:
    """skopeo's `dir:` format: manifest.json plus every blob named by its hex digest."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    doc = json.loads(manifest.data)
    for d in [doc["config"]] + doc["layers"]:
        hexd = d["digest"].split(":", 1)[1]
        (root / hexd).write_bytes(lay.blobs[d["digest"]])
    (root / "manifest.json").write_bytes(manifest.data)
    (root / "version").write_text("Directory Transport Version: 1.1\n")
    return root


def sample_files(tag: str, n: int = 3, size: int = 2000) -> dict[str, bytes]:
    """A few files whose content depends on `tag`, so different platforms get different layers."""
    out = {}
    for i in range(n):
        seed = hashlib.sha256(f"{tag}/{i}".encode()).digest()
        out[f"data/{tag}/file{i}.txt"] = (seed.hex() * (size // 64 + 1))[:size].encode()
    out["etc/os-release"] = f"ID=test\nVARIANT={tag}\n".encode()
    return out


MULTI_PLATFORMS = [
    {"os": "linux", "architecture": "amd64"},
    {"os": "linux", "architecture": "arm64", "variant": "v8"},
    {"os": "linux", "architecture": "arm", "variant": "v7"},
    {"os": "linux", "architecture": "arm", "variant": "v6"},
]


def single_arch_layout(path: str | os.PathLike[str], compression: str = "gzip", tag: str = "v1",
                       docker: bool = False, layers: int = 2) -> dict:
    lay = Layout()
    ls = [lay.layer(sample_files(f"single-{compression}-{i}"), compression, docker=docker) for i in range(layers)]
    img = lay.image(ls, docker=docker)
    if docker:
        write_dir_transport(lay, img, path)  # skopeo's oci: transport refuses Docker media types
    else:
        lay.tag(img, tag)
        lay.write(path)
    return {"manifest": img.digest, "layers": [b.digest for b, _ in ls], "diff_ids": [d for _, d in ls]}


def multi_arch_layout(path: str | os.PathLike[str], tag: str = "v1") -> dict:
    """An index with linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6 and an attestation entry."""
    lay = Layout()
    shared = lay.layer({"etc/shared": b"shared by every platform\n"}, "gzip")
    entries = []
    per_platform = {}
    for p in MULTI_PLATFORMS:
        name = "-".join(v for v in (p["architecture"], p.get("variant", "")) if v)
        own = lay.layer(sample_files(name), "gzip")
        img = lay.image([shared, own], arch=p["architecture"], variant=p.get("variant", ""))
        entries.append((img, p, None))
        per_platform["/".join([p["os"], p["architecture"]] + ([p["variant"]] if "variant" in p else []))] = img.digest
    att = lay.attestation(entries[0][0])
    entries.append((att, {"os": "unknown", "architecture": "unknown"},
                    {"vnd.docker.reference.type": "attestation-manifest",
                     "vnd.docker.reference.digest": entries[0][0].digest}))
    idx = lay.index(entries)
    lay.tag(idx, tag)
    lay.write(path)
    return {"index": idx.digest, "platforms": per_platform, "attestation": att.digest}
