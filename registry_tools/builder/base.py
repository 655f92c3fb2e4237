"""fromImage: a base image from a docker-archive, an OCI layout or a pinned registry reference.

Whatever the source, its blobs are brought into the verified blob cache, so the builder
sees one kind of base: a config and layers that are cached blobs with known diff_ids.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.engine import Layer
from registry_tools.model.digest import Digest
from registry_tools.errors import ManifestError, UsageError
from registry_tools.formats.compression import READ_SIZE, decompressed
from registry_tools.model.platform import Platform, choose_in_index
from registry_tools.session import Session
from registry_tools.builder.spec import FromImage


@dataclass
class BaseImage:
    config: dict[str, Any]
    layers: list[Layer]
    config_raw: bytes = b""


def load_base(src: FromImage, platform: Platform, session: Session) -> BaseImage:
    if src.kind == "registry":
        return _from_registry(src, platform, session)
    if src.kind == "oci":
        return _from_layout(Path(src.location), src.name, platform, session)
    return _from_docker_archive(Path(src.location), src.name, session)


def _from_registry(src: FromImage, platform: Platform, session: Session) -> BaseImage:
    ref = refs.parse_normalized(src.location)
    source = session.source(ref)
    image = source.resolve(Digest.parse(ref.digest), platform)
    source.fetch_layers(image)
    return BaseImage(image.config, image.layers, image.config_raw)


def _safe_name(name: str, where: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or not name:
        raise ManifestError(f"{where}: refuses the path {name!r}: it would leave the archive")
    return name


def _from_layout(root: Path, name: str | None, platform: Platform, session: Session) -> BaseImage:
    cache = session.cache
    try:
        index = json.loads((root / "index.json").read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"fromImage {root}: not an OCI image layout ({e})") from None
    entries = index.get("manifests") or []
    if name is not None:
        entries = [e for e in entries if (e.get("annotations") or {}).get("org.opencontainers.image.ref.name") == name]
    if not entries:
        raise UsageError(f"fromImage {root}: no image" + (f" named {name!r}" if name else ""))
    if len(entries) > 1 and name is None:
        entries = [entries[choose_in_index({"manifests": entries}, platform)]]

    def blob(desc: dict[str, Any]) -> bytes:
        d = mf.Descriptor.from_json(desc, f"fromImage {root}")
        path = root / "blobs" / d.digest.algorithm / d.digest.hex
        data = path.read_bytes() if d.size <= mf.MAX_MANIFEST_SIZE else b""
        if hashlib.sha256(data).hexdigest() != d.digest.hex or len(data) != d.size:
            raise ManifestError(f"fromImage {root}: blob {d.digest} does not match its digest or size")
        return data

    desc = entries[0]
    doc = mf.parse(blob(desc), desc.get("mediaType", ""), f"fromImage {root}")
    if isinstance(doc, mf.Index):
        child = doc.manifests[choose_in_index(json.loads(doc.raw), platform)]
        doc = mf.parse(blob(child.raw), child.media_type, f"fromImage {root}")
    if not isinstance(doc, mf.ImageManifest):
        raise ManifestError(f"fromImage {root}: nested indexes are not supported")
    config_raw = blob(doc.config.raw)
    config = mf.parse_config(config_raw, f"fromImage {root} config")
    ids = mf.diff_ids(config)
    if len(ids) != len(doc.layers):
        raise ManifestError(f"fromImage {root}: {len(doc.layers)} layers but {len(ids)} diff_ids")
    layers = []
    for d, diff in zip(doc.layers, ids):
        if not cache.has(d.digest, d.size):
            with open(root / "blobs" / d.digest.algorithm / d.digest.hex, "rb") as f:
                cache.import_stream(f, d.digest, d.size, f"fromImage {root}")
        layers.append(session.store.layer_facts(d, diff, f"fromImage layer {d.digest}"))
    return BaseImage(config, layers, config_raw)


def _from_docker_archive(path: Path, name: str | None, session: Session) -> BaseImage:
    cache = session.cache
    where = f"fromImage {path}"
    try:
        tf = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as e:
        raise UsageError(f"{where}: not a readable docker-archive ({e})") from None
    with tf:
        def member_bytes(member_name: str, limit: int = mf.MAX_MANIFEST_SIZE) -> bytes:
            f = _open_member(tf, _safe_name(member_name, where), where)
            data = f.read(limit + 1)
            if len(data) > limit:
                raise ManifestError(f"{where}: {member_name} is too large")
            return data

        try:
            manifest = json.loads(member_bytes("manifest.json"))
        except ValueError:
            raise ManifestError(f"{where}: manifest.json is not valid JSON") from None
        if not isinstance(manifest, list) or not manifest:
            raise ManifestError(f"{where}: manifest.json lists no image")
        if name is not None:
            wanted = str(refs.parse_docker_ref(name))
            manifest = [m for m in manifest
                        if any(str(refs.parse_docker_ref(t)) == wanted for t in (m.get("RepoTags") or []))]
            if not manifest:
                raise UsageError(f"{where}: no image tagged {name!r}")
        elif len(manifest) > 1:
            raise UsageError(f"{where}: holds {len(manifest)} images; say which with fromImageName")
        entry = manifest[0]
        config_raw = member_bytes(entry["Config"])
        config = mf.parse_config(config_raw, f"{where} config")
        ids = mf.diff_ids(config, where)
        if len(ids) != len(entry.get("Layers") or []):
            raise ManifestError(f"{where}: {len(entry.get('Layers') or [])} layers but {len(ids)} diff_ids")
        layers = []
        for layer_name, diff in zip(entry["Layers"], ids):
            if not cache.has(diff):
                # Stored uncompressed, under its diff_id: checked while it is copied in.
                stream, _ = decompressed(_open_member(tf, _safe_name(layer_name, where), where))
                with cache.writer(diff) as out:
                    h = hashlib.sha256()
                    while chunk := stream.read(READ_SIZE):
                        h.update(chunk)
                        out.write(chunk)
                    if h.hexdigest() != diff.hex:
                        raise ManifestError(f"{where}: layer {layer_name} does not match its diff_id {diff}")
            size = cache.path(diff).stat().st_size
            layers.append(Layer(mf.Descriptor(mf.OCI_LAYER, diff, size), diff, size))
            cache.put_meta(diff, {"diff_id": str(diff), "size": size, "compression": "none"})
    return BaseImage(config, layers, config_raw)


def _open_member(tf: tarfile.TarFile, name: str, where: str):
    try:
        member = tf.getmember(name)
    except KeyError:
        raise ManifestError(f"{where}: has no {name}") from None
    for _ in range(16):  # docker save links duplicate layers; follow, but not in circles
        if not (member.issym() or member.islnk()):
            break
        target = member.linkname if member.islnk() else \
            "/".join(name.split("/")[:-1] + [member.linkname]) if not member.linkname.startswith("/") else ""
        parts: list[str] = []
        for p in target.split("/"):
            if p == "..":
                if not parts:
                    raise ManifestError(f"{where}: link {name} points outside the archive")
                parts.pop()
            elif p and p != ".":
                parts.append(p)
        name = "/".join(parts)
        try:
            member = tf.getmember(name)
        except KeyError:
            raise ManifestError(f"{where}: link target {name} is missing") from None
    else:
        raise ManifestError(f"{where}: link cycle at {name}")
    f = tf.extractfile(member)
    if f is None:
        raise ManifestError(f"{where}: {name} is not a file")
    return f
