"""assemble: the image a pin names, written exactly as `pull` writes it.

A layer pin (model.pin) names the image by its blobs. Assembling it is a pull of the
manifest it lists (the platform's, or with `platform = "all"` the index), so the output
goes through the same engine into the same destination and is byte for byte `pull`'s:
the two kinds of pin always agree. Every manifest and config is verified by its digest
and every layer by its digest and diff_id, wherever it comes from: the cache, the
registry, or a directory of blobs (`blobs`: what Nix fetched, one fixed-output
derivation a blob), in which case nothing is fetched at all. A pin that lists other
blobs than its manifests name is refused before anything is written.

A full pin (one with a `hash`) given here is pulled with its values, the hash checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from registry_tools import endpoint
from registry_tools.api.lock import check_entry
from registry_tools.api.options import check_all_format
from registry_tools.api.pull import PullOptions, PullResult, check_served, pull_image
from registry_tools.engine import copy, copy_tree
from registry_tools.errors import UsageError
from registry_tools.model import manifest as mf
from registry_tools.model.pin import LayerPin, difference, is_layer_pin, layer_pin, manifests_of
from registry_tools.model.platform import Choice, Platform
from registry_tools.model.tree import image_platforms, parse_node
from registry_tools.session import Session, using
from registry_tools.store.cache import BlobCache

MAX_PIN = 64 << 20  # a pin file (the size a lock may have)


@dataclass(frozen=True)
class AssembleOptions:
    """What `registry-tools assemble` (and `pull --pin`) takes."""

    pin: str | PathLike[str]  # a pin as `prefetch --json` printed it (either kind); "-": stdin
    output: str | PathLike[str] | None  # None: the output's hash only
    format: str | None = None  # default: the pin's
    blobs: str | PathLike[str] | None = None  # every blob from here (files named by the digest's hex)
    check_registry: bool = False  # confirm first that the registry still serves the pinned manifest


def read_pin(path: str | PathLike[str], text: str | None = None) -> dict[str, Any]:
    """A pin file's JSON object (`text`: its contents, already read from stdin)."""
    where = "pin on stdin" if text is not None else f"pin {path}"
    if text is None:
        p = Path(path)
        try:
            if p.stat().st_size > MAX_PIN:
                raise UsageError(f"{where}: over {MAX_PIN >> 20} MB; not a pin")
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{where}: not UTF-8 text; not a pin") from None
    if not text.lstrip().startswith("{"):
        raise UsageError(f"{where}: not a JSON object (a Nix pin?): write it with `prefetch --json`")
    doc = mf.load_json(text, where, UsageError)
    if not isinstance(doc, dict) or "images" in doc:
        raise UsageError(f"{where}: a lock file, not a pin: give one of its entries")
    return doc


def pull_pin(options: AssembleOptions, pin: dict[str, Any], session: Session | None = None) -> PullResult:
    """Write what `pin` names: a layer pin assembled from its blobs, a full pin pulled."""
    if is_layer_pin(pin):
        return assemble(options, layer_pin(pin, f"pin {options.pin}"), session)
    if options.blobs is not None:
        raise UsageError("--blobs takes a layer pin (prefetch --layers); this pin has a hash")
    return pull_image(_full(pin, options), session)


def _full(pin: dict[str, Any], options: AssembleOptions) -> PullOptions:
    """A full pin's values as pull takes them (the pin's own format: the hash is of it)."""
    check_entry(f"pin {options.pin}", pin)
    fmt = pin.get("format", "docker-archive")
    if options.format is not None and options.format != fmt:
        raise UsageError(f"the pin's hash is of a {fmt}; --format {options.format} would write another output")
    whole = pin.get("platform") == "all"
    return PullOptions(f"{pin['imageName']}@{pin['imageDigest']}", options.output, format=fmt,
                       os=None if whole else pin["os"], arch=None if whole else pin["arch"],
                       variant=None if whole else pin.get("variant"), all_platforms=whole,
                       final_image_name=pin["finalImageName"], final_image_tag=pin["finalImageTag"],
                       hash=pin["hash"], check_registry=options.check_registry)


def take_blobs(pin: LayerPin, directory: Path, cache: BlobCache) -> None:
    """Every manifest and blob the pin lists into the cache from `directory`, each checked
    against its digest and size on the way (a file named by the digest's hex, as in an OCI
    layout's blobs/sha256; a symbolic link to one, as Nix's fetched blobs are, is followed)."""
    if not directory.is_dir():
        raise UsageError(f"--blobs {directory} is not a directory")
    for desc in pin.everything():
        if cache.has(desc.digest, desc.size):
            continue
        try:
            f = open(directory / desc.digest.hex, "rb")
        except FileNotFoundError:
            raise UsageError(f"--blobs {directory}: no file {desc.digest.hex} for {desc.digest}") from None
        with f:
            cache.import_stream(f, desc.digest, desc.size, f"--blobs {directory}")


def _check(pin: LayerPin, source: endpoint.RegistryEndpoint, session: Session) -> None:
    """Refuse a pin whose lists are not what its manifests (verified by digest) name."""
    if pin.all_platforms:
        actual = manifests_of(source.tree(session).read(()))
    else:
        top = pin.manifests[0].descriptor
        where = f"manifest {pin.image_name}@{top.digest}"
        raw, _ = session.source(source.ref).manifest_bytes(top.digest, top.size)
        actual = manifests_of(parse_node(top, raw, "", where)[0])
    wrong = difference(pin, actual)
    if wrong is not None:
        raise UsageError(f"the pin does not match the image it names: {wrong}")


def assemble(options: AssembleOptions, pin: LayerPin, session: Session | None = None) -> PullResult:
    """Write the image `pin` names into `options.output` as `pull` would with the pin's values."""
    fmt = options.format or pin.format
    if pin.all_platforms:
        check_all_format(fmt)
    output = endpoint.output(options.output, fmt)
    output.check()
    source = endpoint.pinned_reference(f"{pin.image_name}@{pin.manifest_digest}")
    with using(session) as s:
        if options.check_registry:
            check_served(s, source.ref)
        if options.blobs is not None:
            take_blobs(pin, Path(options.blobs), s.cache)
        _check(pin, source, s)
        destination = output.destination(s, endpoint.Writing(pin.final_image_name, pin.final_image_tag))

        def result(platform: Platform, sha: bytes, platforms: tuple[str, ...] = ()) -> PullResult:
            return PullResult(pin.image_name, pin.image_digest, pin.manifest_digest, platform, pin.final_image_name,
                              pin.final_image_tag, fmt, sha, Path(options.output) if options.output else None,
                              pin.all_platforms, platforms)
        if pin.all_platforms:
            done = copy_tree(source.tree(s), destination, s.cache)
            assert done.tree is not None
            return result(Platform("", ""), done.result, tuple(image_platforms(done.tree)))
        image, sha = copy(source.image(s, Choice(Platform(pin.os, pin.arch, pin.variant))), destination, s.cache)
        return result(image.platform, sha)
