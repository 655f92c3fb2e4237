"""pull: an image pinned by digest, verified end to end, written as an archive or layout.

The output's bytes are a function of (manifest digest, platform, final name and tag,
format) alone; its sha256 is what users pin, so this module writes nothing that depends
on time, the host or the order in which downloads finish.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from registry_tools.engine import copy, repairing
from registry_tools.errors import InvalidReference, UsageError
from registry_tools.fileio import check_destination, check_layout_destination
from registry_tools.formats import FORMATS
from registry_tools.formats.destination import ArchiveDestination, ArchiveOptions
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest, nix32_encode, parse_output_hash, sri
from registry_tools.model.platform import Choice, Platform, requested
from registry_tools.model import manifest as mf
from registry_tools.model.tree import ManifestNode, image_platforms
from registry_tools.registry.source import RegistryImage, RegistrySource
from registry_tools.registry.tree import fetch_blobs, read_tree
from registry_tools.session import Session


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


def split_name(image: str) -> tuple[str, str, str]:
    """(name as typed, tag, digest) of a user's image argument."""
    name, _, digest = image.partition("@")
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest


def parse_image(image: str, digest: str | None) -> tuple[refs.Reference, str]:
    """Normalised reference (with the pinned digest) and the name as the user typed it."""
    ref = refs.parse_normalized(image)
    typed_name = split_name(image)[0]
    if digest:
        Digest.parse(digest)
        if ref.digest and ref.digest != digest:
            raise UsageError(f"{image} names digest {ref.digest} but --digest says {digest}")
        ref = ref.with_digest(digest)
    return ref, typed_name


def check_final_names(name: str, tag: str) -> None:
    try:
        r = refs.parse_normalized(name)
    except InvalidReference as e:
        raise UsageError(f"invalid final image name {name!r}: {e}") from None
    if r.tag or r.digest:
        raise UsageError(f"final image name {name!r} must not carry a tag or digest; use --final-image-tag")
    if not refs.TAG_RE.match(tag):
        raise UsageError(f"invalid final image tag {tag!r}")


ALL = "all"


def wants_all(platform: str | Platform | None, all_platforms: bool) -> bool:
    """`--all` or `--platform all`: the whole index."""
    return all_platforms or (isinstance(platform, str) and platform.strip().lower() == ALL)


def check_all_format(format: str) -> None:
    if format == "docker-archive":
        raise UsageError("a docker-archive holds one platform: pull every platform (--all) with --format oci or "
                         "--format oci-archive, or choose one with --platform")


def whole_index(platform: str | Platform | None, all_platforms: bool, format: str, *others: str | None) -> bool:
    """Whether the whole index is asked for (`--all` or `--platform all`), checked against the
    format and the other platform options."""
    if not wants_all(platform, all_platforms):
        return False
    check_all_format(format)
    if any(others) or (platform is not None and not (isinstance(platform, str) and platform.strip().lower() == ALL)):
        raise UsageError("--all takes every platform: drop --platform/--os/--arch/--variant")
    return True


def write_whole(source: RegistrySource, digest: Digest, destination: ArchiveDestination,
                session: Session) -> tuple[ManifestNode, bytes]:
    """The tree `digest` names (an index and every manifest and blob under it), verified into the
    cache, then written; a damaged cached blob is fetched again once."""
    def run() -> tuple[ManifestNode, bytes]:
        tree = read_tree(source, mf.Descriptor("", digest, 0))
        fetch_blobs(source, tree)
        return tree, destination.write_tree(tree)
    return repairing(session.cache, run)


def _pinned(image: str, digest: str | None) -> tuple[refs.Reference, str]:
    ref, typed_name = parse_image(image, digest)
    if not ref.digest:
        raise UsageError(f"{image} is not pinned: give --digest or IMAGE@sha256:…; "
                         f"run `registry-tools prefetch {image}` to get the digest")
    return ref, typed_name


def _check_signature(session: Session, ref: refs.Reference, key: str | os.PathLike[str]) -> None:
    from registry_tools.api.sign import check_signatures, key_bytes

    check_signatures(session.source(ref.name_only()), Digest.parse(ref.digest), key_bytes(key), str(key))


def pull_image(
    image: str,
    output: str | os.PathLike[str] | None,
    *,
    digest: str | None = None,
    format: str = "docker-archive",
    platform: str | Platform | None = None,
    os: str | None = None,
    arch: str | None = None,
    variant: str | None = None,
    final_image_name: str | None = None,
    final_image_tag: str = "latest",
    hash: str | None = None,
    session: Session | None = None,
    cross_arch: bool = False,
    all_platforms: bool = False,
    verify_key: str | os.PathLike[str] | None = None,
) -> PullResult:
    """Pull IMAGE pinned by digest into `output` (None: compute the output's hash only);
    `all_platforms` (or platform "all"): the whole index, as an OCI layout or oci-archive."""
    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    whole = whole_index(platform, all_platforms, format, os, arch, variant)
    platform = None if whole else platform
    ref, typed_name = _pinned(image, digest)
    expected = parse_output_hash(hash) if hash is not None else None
    final_name = final_image_name or typed_name
    check_final_names(final_name, final_image_tag)
    choice = Choice(requested(platform, os, arch, variant), cross_arch, bool(platform or os or arch or variant))
    if output is not None:
        (check_layout_destination if format == "oci" else check_destination)(output)
    own = session is None
    session = session or Session()
    try:
        if verify_key is not None:  # before anything is fetched or written
            _check_signature(session, ref, verify_key)
        options = ArchiveOptions(format, final_name, final_image_tag, expected, hash or "")
        destination = ArchiveDestination(session.store, options, output, workers=session.workers)
        if whole:
            tree, actual = write_whole(session.source(ref), Digest.parse(ref.digest), destination, session)
            return PullResult(
                image_name=ref.name, image_digest=Digest.parse(ref.digest), manifest_digest=tree.digest,
                platform=Platform("", ""), final_image_name=final_name, final_image_tag=final_image_tag,
                format=format, sha256=actual, output=Path(output) if output is not None else None,
                all_platforms=True, platforms=tuple(image_platforms(tree)))
        source = RegistryImage(session.source(ref), Digest.parse(ref.digest), choice)
        resolved, actual = copy(source, destination, session.cache)
    finally:
        if own:
            session.close()
    return PullResult(
        image_name=ref.name, image_digest=Digest.parse(ref.digest),
        manifest_digest=resolved.manifest_descriptor.digest, platform=resolved.platform,
        final_image_name=final_name, final_image_tag=final_image_tag, format=format,
        sha256=actual, output=Path(output) if output is not None else None,
    )
