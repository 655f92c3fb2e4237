"""Layer pins: an image named by its blobs, not by the hash of one output.

A full pin (`prefetch`) is the sha256 of what `pull` writes, so making or checking one
reads every byte of the image. A layer pin lists what the registry's own digests name
already: each manifest of the image (one platform's, or an index and everything under
it) with its digest, size and media type, its config and its layers. Making one reads
the tag, the manifests and a config, never a layer; Nix fetches each blob as a
fixed-output derivation whose hash is its digest, so a layer two images share is one
store path; and `assemble` writes from the blobs the same bytes `pull` writes.

Here: the value, its JSON and Nix forms, and the one reading of it from untrusted JSON
(a pin file, a lock entry). `manifests[0]` is what the output's index.json names: the
platform's manifest, or with `platform = "all"` the index, followed by every manifest
under it, parents before children.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from registry_tools.errors import InvalidDigest, InvalidReference, UsageError
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.tree import ManifestNode, platform_of

ALL_FORMATS = ("oci", "oci-archive")  # what holds a whole index (a docker-archive holds one image)


def _plain(desc: mf.Descriptor) -> mf.Descriptor:
    """A descriptor as a pin records it: media type, digest and size, nothing else."""
    return mf.Descriptor(desc.media_type, desc.digest, desc.size)


def _blob_json(desc: mf.Descriptor) -> dict[str, Any]:
    return {"digest": str(desc.digest), "size": desc.size, "mediaType": desc.media_type}


@dataclass(frozen=True)
class PinnedManifest:
    """One manifest of a layer pin, and the blobs it names (an index names none)."""

    descriptor: mf.Descriptor  # media type, digest and size of the manifest itself
    config: mf.Descriptor | None = None
    layers: tuple[mf.Descriptor, ...] = ()
    platform: str = ""  # the index entry's, for a manifest under an index (informational)

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def blobs(self) -> tuple[mf.Descriptor, ...]:
        return ((self.config,) if self.config is not None else ()) + self.layers

    def to_dict(self) -> dict[str, Any]:
        d = _blob_json(self.descriptor)
        if self.platform:
            d["platform"] = self.platform
        if self.config is not None:
            d["config"] = _blob_json(self.config)
        if self.config is not None or self.layers:
            d["layers"] = [_blob_json(b) for b in self.layers]
        return d


def pinned(node: ManifestNode, top: bool = False) -> PinnedManifest:
    """A manifest of a tree as a pin lists it (the top one without the platform of the index
    entry it may have been chosen from: the pin's os and arch say that)."""
    desc = mf.Descriptor(node.media_type, node.digest, len(node.raw))
    has_config = isinstance(node.doc.get("config"), dict)
    blobs = tuple(_plain(b) for b in node.blobs)
    config = blobs[0] if has_config and blobs else None
    return PinnedManifest(desc, config, blobs[1:] if config is not None else blobs,
                          "" if top else platform_of(node))


def manifests_of(tree: ManifestNode) -> tuple[PinnedManifest, ...]:
    """Every manifest of a tree once, parents before children, the top one first."""
    out: list[PinnedManifest] = []
    seen: set[Digest] = set()
    stack = [(tree, True)]
    while stack:
        node, top = stack.pop()
        if node.digest in seen:
            continue
        seen.add(node.digest)
        out.append(pinned(node, top))
        stack.extend((child, False) for child in reversed(node.children))
    return tuple(out)


@dataclass(frozen=True)
class LayerPin:
    image_name: str
    image_digest: Digest  # what the tag resolved to (an index for a multi-arch tag)
    final_image_name: str
    final_image_tag: str
    manifests: tuple[PinnedManifest, ...]
    os: str = ""
    arch: str = ""
    variant: str = ""
    format: str = "docker-archive"
    all_platforms: bool = False  # the whole index: manifests[0] is the index

    @property
    def manifest_digest(self) -> Digest:
        """The manifest the output names: the platform's, or the index's."""
        return self.manifests[0].digest

    def everything(self) -> list[mf.Descriptor]:
        """Every manifest and blob the output holds, each once, in the pin's order."""
        seen: dict[Digest, mf.Descriptor] = {}
        for m in self.manifests:
            for d in (m.descriptor, *m.blobs):
                seen.setdefault(d.digest, d)
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        """The pin's keys in the order users read them; `manifests` last."""
        d: dict[str, Any] = {
            "imageName": self.image_name,
            "imageDigest": str(self.image_digest),
            "finalImageName": self.final_image_name,
            "finalImageTag": self.final_image_tag,
        }
        if self.all_platforms:
            d["platform"] = "all"
            d["format"] = self.format
        else:
            d["os"] = self.os
            d["arch"] = self.arch
            if self.variant:
                d["variant"] = self.variant
            d["manifestDigest"] = str(self.manifest_digest)
            if self.format != "docker-archive":
                d["format"] = self.format
        d["manifests"] = [m.to_dict() for m in self.manifests]
        return d

    def to_nix(self) -> str:
        return nix_value(self.to_dict())


def is_layer_pin(obj: object) -> bool:
    """A layer pin lists manifests; a full pin has a hash."""
    return isinstance(obj, dict) and "manifests" in obj


# --- reading one from untrusted JSON ---------------------------------------------------------

def _text(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise UsageError(f"{where}: {key} is missing or not a string")
    return value


def _digest(value: Any, where: str) -> Digest:
    if not isinstance(value, str):
        raise UsageError(f"{where}: digest is missing or not a string")
    try:
        return Digest.parse(value)
    except InvalidDigest as e:
        raise UsageError(f"{where}: {e}") from None


def _blob(obj: Any, where: str) -> mf.Descriptor:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: not an object with digest, size and mediaType")
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UsageError(f"{where}: size is missing or not a whole number")
    return mf.Descriptor(_text(obj, "mediaType", where, required=False), _digest(obj.get("digest"), where), size)


def _manifest(obj: Any, where: str) -> PinnedManifest:
    desc = _blob(obj, where)
    where = f"{where} ({desc.digest})"
    config = _blob(obj["config"], f"{where} config") if obj.get("config") is not None else None
    layers = obj.get("layers", [])
    if not isinstance(layers, list):
        raise UsageError(f"{where}: layers is not a list")
    return PinnedManifest(desc, config, tuple(_blob(b, f"{where} layer {i + 1}") for i, b in enumerate(layers)),
                          _text(obj, "platform", where, required=False))


def _shape(pin: LayerPin, where: str) -> None:
    """What manifests[0] must be: the platform's manifest, or the index the pin names."""
    top = pin.manifests[0]
    if pin.all_platforms:
        if top.digest != pin.image_digest:
            raise UsageError(f"{where}: with platform all, manifests[0] is what imageDigest names")
        if pin.format not in ALL_FORMATS:
            raise UsageError(f"{where}: a whole index (platform all) is pinned as format oci or oci-archive")
    elif len(pin.manifests) != 1 or top.config is None:
        raise UsageError(f"{where}: the pin of one platform lists one manifest, with its config")


def layer_pin(obj: Any, where: str) -> LayerPin:
    """A layer pin from JSON (`prefetch --layers --json`, a lock entry, Nix's toJSON of one),
    every field checked; a lock entry's `reference` and line platform are allowed beside it."""
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: a pin must be a JSON object")
    if "hash" in obj or "sha256" in obj:
        raise UsageError(f"{where}: a pin has either a hash (a full pin) or manifests (a layer pin), not both")
    items = obj.get("manifests")
    if not isinstance(items, list) or not items:
        raise UsageError(f"{where}: manifests is missing or empty")
    name = _text(obj, "imageName", where)
    try:
        ref = refs.parse_normalized(name)
    except InvalidReference as e:
        raise UsageError(f"{where}: {e}") from None
    if ref.tag or ref.digest:
        raise UsageError(f"{where}: imageName {name!r} must name a repository only")
    whole = obj.get("platform") == "all"
    manifests = tuple(_manifest(m, f"{where}: manifests[{i}]") for i, m in enumerate(items))
    pin = LayerPin(name, _digest(obj.get("imageDigest"), f"{where}: imageDigest"),
                   _text(obj, "finalImageName", where), _text(obj, "finalImageTag", where), manifests,
                   "" if whole else _text(obj, "os", where), "" if whole else _text(obj, "arch", where),
                   _text(obj, "variant", where, required=False),
                   _text(obj, "format", where, required=False) or "docker-archive", whole)
    if not whole and _digest(obj.get("manifestDigest"), f"{where}: manifestDigest") != pin.manifest_digest:
        raise UsageError(f"{where}: manifestDigest is not the digest of manifests[0]")
    _shape(pin, where)
    return pin


def difference(pin: LayerPin, actual: tuple[PinnedManifest, ...]) -> str | None:
    """How the manifests the pin lists differ from those the image has (None: they agree). The
    manifests' own media types and platforms are informational and not compared."""
    listed = {m.digest: m for m in pin.manifests}
    for m in actual:
        mine = listed.pop(m.digest, None)
        if mine is None:
            return f"manifest {m.digest} is not listed"
        if mine.descriptor.size != m.descriptor.size:
            return f"manifest {m.digest} is {m.descriptor.size} bytes, not {mine.descriptor.size}"
        if mine.blobs != m.blobs:
            got = ", ".join(f"{b.digest} ({b.size} bytes, {b.media_type})" for b in m.blobs)
            return f"manifest {m.digest} names {got or 'no blob'}; the pin lists others"
    if listed:
        return f"manifest {next(iter(listed))} is not part of the image"
    return None


# --- Nix ---------------------------------------------------------------------------------

def nix_string(value: str) -> str:
    """A Nix string literal; `${` is escaped so a value can never be interpolated."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def _nix_lines(value: Any, indent: str) -> Iterator[str]:
    inner = indent + "  "
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{inner}{key} = {nix_value(item, inner)};"
    else:
        for item in value:
            yield inner + nix_value(item, inner)


def nix_value(value: Any, indent: str = "") -> str:
    """A JSON value (objects of identifier keys, lists, strings, whole numbers) as a Nix
    expression, one attribute or element a line."""
    if isinstance(value, (dict, list)):
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        if not value:
            return f"{opening} {closing}"
        return "\n".join([opening, *_nix_lines(value, indent), indent + closing])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return nix_string(str(value))
