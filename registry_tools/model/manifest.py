"""Manifests and indexes: Docker schema2 and OCI, with media-type sniffing.

The bytes of a manifest are what its digest names, so we keep them verbatim (`raw`)
and only read from the parsed form; we never re-serialise a manifest we did not write.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from registry_tools.errors import InvalidDigest, ManifestError
from registry_tools.model.digest import Digest
from registry_tools.model.platform.values import check_fields

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_DEPTH = 64  # JSON nesting: real documents use under ten levels


def load_json(raw: bytes | str, where: str, error: type[Exception] = ManifestError) -> Any:
    """Untrusted JSON, parsed once at the edge: invalid text, or nesting past MAX_DEPTH, is `error`."""
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise error(f"{where}: not valid JSON") from None
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise error(f"{where}: JSON nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return obj


def canonical_json(obj: object) -> bytes:
    """The JSON we write (configs, manifests, indexes, archive metadata): compact, key order as given."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _str_map(value: Any, where: str, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestError(f"{where}: {key} must be an object of strings")
    return dict(value)


def _platform(value: Any, where: str) -> dict[str, Any] | None:
    """An index entry's platform with every field of the right type (or the entry is refused)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: platform must be an object")
    check_fields(value, where, ManifestError)
    return value

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
SCHEMA1_TYPES = (SCHEMA1, SCHEMA1_SIGNED, "application/json")
# What we ask a registry for, best first; schema1 is deliberately absent.
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Descriptor":
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: descriptor is not an object")
        mt, dg, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(dg, str):
            raise ManifestError(f"{where}: descriptor has no digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: descriptor {dg} has no valid size")
        try:
            digest = Digest.parse(dg)
        except InvalidDigest as e:
            raise ManifestError(f"{where}: {e}") from None
        if mt is not None and not isinstance(mt, str):
            raise ManifestError(f"{where}: descriptor {dg} has a mediaType that is not a string")
        if "artifactType" in obj and not isinstance(obj["artifactType"], str):
            raise ManifestError(f"{where}: descriptor {dg} has an artifactType that is not a string")
        urls = obj.get("urls")
        if urls is not None and (not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)):
            raise ManifestError(f"{where}: descriptor {dg}: urls must be a list of strings")
        return cls(
            media_type=mt or "",
            digest=digest,
            size=size,
            platform=_platform(obj.get("platform"), f"{where} ({dg})"),
            annotations=_str_map(obj.get("annotations"), f"{where} ({dg})", "annotations"),
            urls=tuple(urls or ()),
            raw=obj,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def with_annotations(raw: bytes, media_type: str, annotations: dict[str, str]) -> bytes:
    """A manifest or index with these annotations added (a new document, so a new digest)."""
    if media_type not in (OCI_MANIFEST, OCI_INDEX):
        raise ManifestError(f"annotations need an OCI manifest or index; a {media_type} has no place for them")
    doc = load_json(raw, "manifest")
    doc["annotations"] = dict(sorted({**_str_map(doc.get("annotations"), "manifest", "annotations"),
                                      **annotations}.items()))
    return canonical_json(doc)


def guess_media_type(raw: bytes) -> str:
    """Sniff a manifest's type from its content, as containers/image does; "" if unknown."""
    try:
        obj = load_json(raw, "manifest")
    except ManifestError:
        return ""
    if not isinstance(obj, dict):
        return ""
    version = obj.get("schemaVersion")
    if version == 1:
        return SCHEMA1_SIGNED if "signatures" in obj else SCHEMA1
    if version != 2:
        return ""
    mt = obj.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if "manifests" in obj:
        return OCI_INDEX
    if "config" in obj:
        config = obj.get("config")
        if isinstance(config, dict) and config.get("mediaType") == DOCKER_CONFIG:
            return DOCKER_MANIFEST
        return OCI_MANIFEST
    return ""


@dataclass(frozen=True)
class ImageManifest:
    raw: bytes
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.raw)


@dataclass(frozen=True)
class Index:
    raw: bytes
    media_type: str
    manifests: tuple[Descriptor, ...]
    artifact_type: str = ""

    def choice_view(self) -> dict[str, Any]:
        """The entries as the platform chooser reads them (every field already type-checked)."""
        view: dict[str, Any] = {"manifests": [d.raw for d in self.manifests]}
        if self.artifact_type:
            view["artifactType"] = self.artifact_type
        return view

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.raw)


def parse(raw: bytes, content_type: str = "", where: str = "manifest") -> ImageManifest | Index:
    """Parse manifest bytes; refuse schema1, unknown types, oversized and malformed documents."""
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestError(f"{where}: {len(raw)} bytes is over the {MAX_MANIFEST_SIZE} byte limit for manifests")
    content_type = content_type.split(";", 1)[0].strip()
    obj = load_json(raw, where)
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: not a JSON object")
    guessed = guess_media_type(raw)
    declared = obj.get("mediaType") if isinstance(obj.get("mediaType"), str) else ""
    if guessed in (SCHEMA1, SCHEMA1_SIGNED) or content_type in (SCHEMA1, SCHEMA1_SIGNED):
        raise ManifestError(
            f"{where}: Docker schema1 manifests are not supported (deprecated since 2017); "
            "ask the registry for a schema2 or OCI image, or re-push it with a current tool"
        )
    media_type = declared or (content_type if content_type in IMAGE_TYPES + INDEX_TYPES else guessed)
    if declared and content_type in IMAGE_TYPES + INDEX_TYPES and content_type != declared:
        raise ManifestError(f"{where}: served as {content_type} but declares mediaType {declared}")
    if media_type in IMAGE_TYPES:
        if "manifests" in obj:
            raise ManifestError(f"{where}: declares {media_type} but has a 'manifests' list")
        if not isinstance(obj.get("layers"), list):
            raise ManifestError(f"{where}: image manifest has no layers list")
        config = Descriptor.from_json(obj.get("config"), f"{where} config")
        layers = tuple(Descriptor.from_json(d, f"{where} layer {i}") for i, d in enumerate(obj["layers"]))
        return ImageManifest(raw, media_type, config, layers)
    if media_type in INDEX_TYPES:
        if not isinstance(obj.get("manifests"), list):
            raise ManifestError(f"{where}: index has no manifests list")
        entries = tuple(Descriptor.from_json(d, f"{where} entry {i}") for i, d in enumerate(obj["manifests"]))
        if "artifactType" in obj and not isinstance(obj["artifactType"], str):
            raise ManifestError(f"{where}: artifactType must be a string")
        _str_map(obj.get("annotations"), where, "annotations")
        return Index(raw, media_type, entries, obj.get("artifactType") or "")
    raise ManifestError(f"{where}: unsupported manifest media type {media_type or '(none)'!r}")


def layer_compression(media_type: str) -> str:
    """'gzip', 'zstd' or 'none' from a layer media type ('' when the type says nothing)."""
    if media_type.endswith("+gzip") or media_type.endswith(".tar.gzip"):
        return "gzip"
    if media_type.endswith("+zstd") or media_type.endswith(".tar.zstd"):
        return "zstd"
    if media_type.endswith(".tar") or media_type == DOCKER_LAYER:
        return "none"
    return ""


def is_layer_type(media_type: str) -> bool:
    return (
        media_type.startswith("application/vnd.oci.image.layer.")
        or media_type.startswith("application/vnd.docker.image.rootfs.")
    )


CONFIG_FIELDS: dict[str, type | tuple[type, ...]] = {  # the fields we read, and their JSON types
    "created": str, "config": dict, "rootfs": dict, "history": list,
}  # and the platform's, checked by model.platform's one rule
RUN_CONFIG_FIELDS: dict[str, type] = {"Env": list, "Cmd": list, "Entrypoint": list, "Labels": dict}


def parse_config(raw: bytes, where: str = "config") -> dict[str, Any]:
    """An image config, with every field we read type-checked (null is taken as absent)."""
    obj = load_json(raw, f"{where}: image config")
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: image config is not a JSON object")
    for key, kind in CONFIG_FIELDS.items():
        if obj.get(key) is not None and not isinstance(obj[key], kind):
            raise ManifestError(f"{where}: image config field {key!r} has the wrong type")
    check_fields(obj, f"{where}: image config", ManifestError)
    run = obj.get("config") or {}
    for key, kind in RUN_CONFIG_FIELDS.items():
        if run.get(key) is not None and not isinstance(run[key], kind):
            raise ManifestError(f"{where}: image config field config.{key} has the wrong type")
    if run.get("Env") is not None and not all(isinstance(e, str) for e in run["Env"]):
        raise ManifestError(f"{where}: image config field config.Env must hold strings")
    return obj


def diff_ids(config: dict[str, Any], where: str = "config") -> list[Digest]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list):
        raise ManifestError(f"{where}: image config has no rootfs.diff_ids")
    try:
        return [Digest.parse(d) for d in ids]
    except InvalidDigest as e:
        raise ManifestError(f"{where}: {e}") from None
