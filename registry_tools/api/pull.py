"""pull: an image pinned by digest, verified end to end, written as an archive or layout.

The output's bytes are a function of (manifest digest, platform, final name and tag,
format) alone; its sha256 is what users pin, so nothing written depends on time, the
host or the order in which downloads finish. A pull is a copy: the pinned reference's
image (or, with `--all`, its whole tree) into the output's endpoint.
"""
from __future__ import annotations

from os import PathLike
from dataclasses import dataclass, field
from pathlib import Path

from registry_tools import endpoint
from registry_tools.api.options import Platforms, check_all_format, check_final_names, parse_image
from registry_tools.engine import copy, copy_tree
from registry_tools.errors import NotFound, UsageError
from registry_tools.formats import FORMATS
from registry_tools.model.digest import Digest, nix32_encode, parse_output_hash, sri
from registry_tools.model.platform import Platform
from registry_tools.model.reference import Reference
from registry_tools.model.tree import image_platforms
from registry_tools.session import Session, using


@dataclass(frozen=True)
class PullOptions:
    """What `registry-tools pull` takes (`output` None: compute the output's hash only)."""

    image: str
    output: str | PathLike[str] | None
    digest: str | None = None
    format: str = "docker-archive"
    platform: str | Platform | None = None
    os: str | None = None
    arch: str | None = None
    variant: str | None = None
    cross_arch: bool = False
    all_platforms: bool = False  # or platform "all": the whole index, as an OCI layout or oci-archive
    final_image_name: str | None = None
    final_image_tag: str = "latest"
    hash: str | None = None  # the output's sha256 as pinned (SRI, hex or Nix base32)
    verify_key: str | PathLike[str] | None = None  # a cosign public key the image must be signed by
    check_registry: bool = False  # confirm first that the registry still serves the pinned manifest
    platforms: Platforms = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "platforms", Platforms(self.platform, self.os, self.arch, self.variant,
                                                        self.cross_arch, self.all_platforms))


@dataclass(frozen=True)
class PullResult:
    image_name: str  # fully qualified, e.g. docker.io/library/alpine
    image_digest: Digest  # what was asked for (an index for multi-arch images)
    manifest_digest: Digest  # the platform manifest that was used
    platform: Platform
    final_image_name: str
    final_image_tag: str
    format: str
    sha256: bytes
    output: Path | None
    all_platforms: bool = False  # the whole index was written (manifest_digest is the index's)
    platforms: tuple[str, ...] = ()  # with all_platforms: the platforms of the images written

    @property
    def hash_sri(self) -> str:
        return sri(self.sha256)

    @property
    def hash_hex(self) -> str:
        return self.sha256.hex()

    @property
    def hash_nix32(self) -> str:
        return nix32_encode(self.sha256)


def _check_signature(session: Session, source: endpoint.RegistryEndpoint, key: str | PathLike[str]) -> None:
    from registry_tools.api.sign import check_signatures, key_bytes

    ref = source.ref
    check_signatures(session.source(ref.name_only()), Digest.parse(ref.digest), key_bytes(key), str(key))


def check_served(session: Session, ref: Reference) -> None:
    """Confirm, by one HEAD of the manifest by its digest (credentials as for any request), that
    the registry still serves what `ref` pins. A pull whose manifests and blobs are all in the
    cache contacts no registry at all: the content is verified by its digests, as Nix trusts a
    store path by its hash; this is the check a caller who wants the registry's word asks for."""
    if session.registry(ref.domain).manifest_digest(ref.path, ref.digest, actions="pull") is None:
        raise NotFound(f"{ref}: {ref.domain} does not serve this manifest (--check-registry: a HEAD by digest "
                       "found nothing)", 404)


def pull_image(options: PullOptions, session: Session | None = None) -> PullResult:
    """Pull the image `options` pins into its output (or only compute the output's hash)."""
    o = options
    if o.format not in FORMATS:
        raise UsageError(f"unknown format {o.format!r}; choose one of {', '.join(FORMATS)}")
    whole = o.platforms.whole()
    if whole:
        check_all_format(o.format)
    ref, typed_name = parse_image(o.image, o.digest)
    if not ref.digest:
        raise UsageError(f"{o.image} is not pinned: give --digest or IMAGE@sha256:…; "
                         f"run `registry-tools prefetch {o.image}` to get the digest")
    final_name = o.final_image_name or typed_name
    check_final_names(final_name, o.final_image_tag)
    source = endpoint.pinned_reference(str(ref))
    expected = parse_output_hash(o.hash) if o.hash is not None else None
    writing = endpoint.Writing(final_name, o.final_image_tag, expected=expected, expected_text=o.hash or "")
    output = endpoint.output(o.output, o.format)
    output.check()
    with using(session) as s:
        if o.check_registry:
            check_served(s, source.ref)
        if o.verify_key is not None:  # before anything is fetched or written
            _check_signature(s, source, o.verify_key)
        destination = output.destination(s, writing)

        def result(manifest: Digest, platform: Platform, sha: bytes, platforms: tuple[str, ...] = ()) -> PullResult:
            return PullResult(ref.name, Digest.parse(ref.digest), manifest, platform, final_name, o.final_image_tag,
                              o.format, sha, Path(o.output) if o.output is not None else None, whole, platforms)
        if whole:
            done = copy_tree(source.tree(s), destination, s.cache)
            assert done.tree is not None
            return result(done.tree.digest, Platform("", ""), done.result, tuple(image_platforms(done.tree)))
        image, sha = copy(source.image(s, o.platforms.choice()), destination, s.cache)
        return result(image.manifest_descriptor.digest, image.platform, sha)
