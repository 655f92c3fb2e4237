"""prefetch: resolve a tag, pull as `pull` would, and print the pin (nix-prefetch-docker, done right).

The pin's values are exactly the arguments `pull` takes, so
pulling with them reproduces `hash`: same defaults, same platform choice, same output.
A layer pin (`--layers`, model.pin) names the image's blobs instead: it reads the tag, the
index, the manifest and the config, never a layer, and `assemble` writes from it what
`pull` writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Union

from registry_tools.api.options import Platforms, check_all_format, check_final_names, split_name
from registry_tools.errors import RegistryToolsError, UsageError
from registry_tools.formats import FORMATS
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest, sri
from registry_tools.model.pin import LayerPin, manifests_of, nix_value
from registry_tools.model.platform import Platform, pin_fields
from registry_tools.model.tree import node_of_image
from registry_tools.registry.source import RegistrySource
from registry_tools.registry.tree import read_tree
from registry_tools.session import Session, using
from registry_tools.workers import JOBS

@dataclass(frozen=True)
class Pin:
    image_name: str
    image_digest: Digest
    sha256: bytes
    final_image_name: str
    final_image_tag: str
    os: str
    arch: str
    variant: str
    manifest_digest: Digest
    format: str = "docker-archive"
    all_platforms: bool = False  # the whole index (os, arch, variant and manifestDigest do not apply)

    @property
    def hash(self) -> str:
        return sri(self.sha256)

    def to_dict(self) -> dict[str, str]:
        """The pin's keys in the order users read them (SPEC section 3)."""
        d = {
            "imageName": self.image_name,
            "imageDigest": str(self.image_digest),
            "hash": self.hash,
            "finalImageName": self.final_image_name,
            "finalImageTag": self.final_image_tag,
        }
        if self.all_platforms:
            d["platform"] = "all"
            d["format"] = self.format
            return d
        d["os"] = self.os
        d["arch"] = self.arch
        if self.variant:
            d["variant"] = self.variant
        d["manifestDigest"] = str(self.manifest_digest)
        if self.format != "docker-archive":
            d["format"] = self.format
        return d

    def to_nix(self) -> str:
        return nix_value(self.to_dict())


AnyPin = Union[Pin, LayerPin]


@dataclass(frozen=True)
class PrefetchOptions:
    """What `registry-tools prefetch` takes: IMAGE[:TAG|@DIGEST] (or IMAGE plus TAG or DIGEST),
    and the options `pull` takes that change its output."""

    image: str
    tag_or_digest: str | None = None
    platform: str | Platform | None = None
    os: str | None = None
    arch: str | None = None
    variant: str | None = None
    cross_arch: bool = False
    all_platforms: bool = False  # or platform "all": the pin of the whole index as `pull --all` writes it
    final_image_name: str | None = None
    final_image_tag: str | None = None
    format: str = "docker-archive"

    @property
    def platforms(self) -> Platforms:
        return Platforms(self.platform, self.os, self.arch, self.variant, self.cross_arch, self.all_platforms)


def _reference(o: PrefetchOptions) -> tuple[refs.Reference, str, str, str]:
    """The repository, and the name, tag and digest as typed."""
    typed_name, typed_tag, typed_digest = split_name(o.image)
    if o.tag_or_digest:
        if typed_tag or typed_digest:
            raise UsageError(f"{o.image} already names a tag or digest; drop the extra {o.tag_or_digest!r}")
        if o.tag_or_digest.startswith("sha256:") or ":" in o.tag_or_digest:
            typed_digest = o.tag_or_digest
        else:
            typed_tag = o.tag_or_digest
    ref = refs.parse_normalized(typed_name)
    if ref.tag or ref.digest:
        raise UsageError(f"invalid image name {typed_name!r}")
    if typed_digest:
        Digest.parse(typed_digest)
    return ref, typed_name, typed_tag, typed_digest


@dataclass(frozen=True)
class _Names:
    ref: refs.Reference  # the repository
    tag: str  # as typed ("" if a digest was)
    digest: str  # as typed
    final_name: str
    final_tag: str
    whole: bool  # the whole index

    def resolve(self, source: RegistrySource) -> Digest:
        """What the image names: the digest typed, else the tag's (a HEAD and a GET, bytes cached)."""
        return Digest.parse(self.digest) if self.digest else source.resolve_tag(self.tag or "latest")


def _names(o: PrefetchOptions) -> _Names:
    if o.format not in FORMATS:
        raise UsageError(f"unknown format {o.format!r}; choose one of {', '.join(FORMATS)}")
    whole = o.platforms.whole()
    if whole:
        check_all_format(o.format)
    ref, typed_name, typed_tag, typed_digest = _reference(o)
    final_name = o.final_image_name or typed_name
    final_tag = o.final_image_tag or typed_tag or "latest"
    check_final_names(final_name, final_tag)
    return _Names(ref, typed_tag, typed_digest, final_name, final_tag, whole)


def prefetch(options: PrefetchOptions, session: Session | None = None) -> Pin:
    """Resolve the image and compute its pin: what `pull` writes, hashed, and nothing written."""
    from registry_tools import endpoint  # the destinations: not needed by a layer pin (start-up)
    from registry_tools.engine import copy, copy_tree

    o = options
    n = _names(o)
    with using(session) as s:
        digest = n.resolve(s.source(n.ref))
        pinned = endpoint.pinned_reference(f"{n.ref.name}@{digest}")
        destination = endpoint.output(None, o.format).destination(s, endpoint.Writing(n.final_name, n.final_tag))
        if n.whole:
            done = copy_tree(pinned.tree(s), destination, s.cache)
            assert done.tree is not None
            return Pin(n.ref.name, digest, done.result, n.final_name, n.final_tag, "", "", "", done.tree.digest,
                       o.format, True)
        image_, sha = copy(pinned.image(s, o.platforms.choice()), destination, s.cache)
    os_, arch_, variant_ = pin_fields(image_.chosen_platform)
    return Pin(n.ref.name, digest, sha, n.final_name, n.final_tag, os_, arch_, variant_,
               image_.manifest_descriptor.digest, o.format)


def prefetch_layers(options: PrefetchOptions, session: Session | None = None) -> LayerPin:
    """The layer pin: what the tag names, with every manifest, config and layer listed by its
    digest. Reads the tag, the index, the platform's manifest and its config (the platform is
    chosen as `pull` chooses it), or with `all` every manifest of the index; never a layer."""
    o = options
    n = _names(o)
    with using(session) as s:
        source = s.source(n.ref)
        digest = n.resolve(source)
        if n.whole:
            tree = read_tree(source, mf.Descriptor("", digest, 0))
            return LayerPin(n.ref.name, digest, n.final_name, n.final_tag, manifests_of(tree), format=o.format,
                            all_platforms=True)
        image = source.resolve(digest, o.platforms.choice())
    os_, arch_, variant_ = pin_fields(image.chosen_platform)
    return LayerPin(n.ref.name, digest, n.final_name, n.final_tag, manifests_of(node_of_image(image)), os_, arch_,
                    variant_, o.format)


# --- many images at once: a lock file ----------------------------------------------------

@dataclass(frozen=True)
class LockLine:
    line: int
    reference: str
    platform: str | None


def parse_lock_input(text: str, source: str = "input") -> list[LockLine]:
    """One reference a line, optionally followed by a platform; `#` starts a comment."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2:
            raise UsageError(f"{source}:{n}: expected 'IMAGE[:TAG|@DIGEST] [OS/ARCH[/VARIANT]]', got {raw.strip()!r}")
        out.append(LockLine(n, parts[0], parts[1] if len(parts) == 2 else None))
    if not out:
        raise UsageError(f"{source}: no image references in it")
    return out


def prefetch_many(lines: Iterable[LockLine], *, session: Session, jobs: int = JOBS, format: str = "docker-archive",
                  layers: bool = False) -> list[tuple[LockLine, AnyPin | RegistryToolsError]]:
    """Pins for many images, resolved concurrently (layer pins with `layers`); each result is a
    pin or the error it hit."""
    items = list(lines)
    make = prefetch_layers if layers else prefetch

    def one(item: LockLine) -> AnyPin | RegistryToolsError:
        try:
            return make(PrefetchOptions(item.reference, platform=item.platform, format=format), session)
        except RegistryToolsError as e:
            return e

    with session.workers.group(jobs) as group:  # the images; their downloads share the session's one limit
        futures = [group.submit(one, item) for item in items]
    return [(item, f.result()) for item, f in zip(items, futures, strict=True)]


def lock_entry(line: LockLine, pin: AnyPin) -> dict[str, Any]:
    """A lock's entry: the line's reference (and platform), then the pin."""
    entry: dict[str, Any] = {"reference": line.reference}
    if line.platform:
        entry["platform"] = line.platform
    entry.update(pin.to_dict())
    return entry


def lock_document(results: list[tuple[LockLine, AnyPin | RegistryToolsError]]) -> dict[str, Any]:
    images = []
    for item, pin in results:
        assert isinstance(pin, (Pin, LayerPin))
        images.append(lock_entry(item, pin))
    return {"version": 1, "images": images}


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


def lock_nix(results: list[tuple[LockLine, AnyPin | RegistryToolsError]]) -> str:
    """The same pins as a Nix list of attribute sets."""
    out = ["["]
    for _, pin in results:
        assert isinstance(pin, (Pin, LayerPin))
        out.append("  " + pin.to_nix().replace("\n", "\n  "))
    out.append("]")
    return "\n".join(out)
