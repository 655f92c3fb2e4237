"""pull: an image pinned by digest, verified end to end, written as an archive or layout.

The output's bytes are a function of (manifest digest, platform, final name and tag,
format) alone; its sha256 is what users pin, so this module writes nothing that depends
on time, the host or the order in which downloads finish.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from registry_tools.model import reference as refs
from registry_tools.formats.archive import docker_archive_entries, oci_archive_entries, write_positional, write_stream
from typing import Callable

from registry_tools.model.image import Image, Layer
from registry_tools.registry.source import RegistrySource
from registry_tools.store.blobs import BlobStore, SizeRecordWrong
from registry_tools.model.digest import Digest, nix32_encode, parse_output_hash, sri
from registry_tools.errors import HashMismatch, InvalidReference, UsageError
from registry_tools.formats.oci_layout import write_layout
from registry_tools.formats.nar import nar_sha256
from registry_tools.engine import repairing
from registry_tools.fileio import AtomicDir, AtomicFile, PipelinedHashWriter, check_destination
from registry_tools.fileio import check_layout_destination
from registry_tools.model.platform import Platform, host_platform, normalize_arch, normalize_os
from registry_tools.model.platform import parse as parse_platform
from registry_tools.session import Session

from registry_tools.formats import FORMATS


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

    @property
    def hash_sri(self) -> str:
        return sri(self.sha256)

    @property
    def hash_hex(self) -> str:
        return self.sha256.hex()

    @property
    def hash_nix32(self) -> str:
        return nix32_encode(self.sha256)


def wanted_platform(platform: str | Platform | None = None, os_name: str | None = None,
                    arch: str | None = None, variant: str | None = None) -> Platform:
    """The platform to choose: `--platform`, or `--os/--arch/--variant`, defaulting to linux and the host's CPU."""
    if isinstance(platform, Platform):
        return platform
    if platform:
        if os_name or arch or variant:
            raise UsageError("give either --platform or --os/--arch/--variant, not both")
        return parse_platform(platform)
    host = host_platform()
    o = normalize_os(os_name or "linux")
    if arch:
        a, v = normalize_arch(arch, variant or "")
        if variant is None and a == "arm" and arch.lower() == "arm":
            v = ""  # plain "arm": an entry without a variant first, then arm/v7 and older
        if variant is None and arch.lower() in ("arm64", "aarch64"):
            v = ""
        return Platform(o, a, v)
    return Platform(o, host.architecture, variant if variant is not None else host.variant)


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


def write_output(image: Image, store: BlobStore, fmt: str, final_name: str, final_tag: str,
                 output: str | os.PathLike[str] | None, expected: bytes | None, expected_text: str = "",
                 layer_for: Callable[[int], Layer] | None = None) -> bytes:
    """Produce the output (or only its hash when `output` is None); commit only if the hash is right."""
    repo_tag = f"{final_name}:{final_tag}"
    if fmt == "oci":
        if output is None:
            tmpdir = Path(tempfile.mkdtemp(prefix="registry-tools-"))
            try:
                write_layout(tmpdir / "layout", image, store, final_name, final_tag)
                return nar_sha256(str(tmpdir / "layout"))
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
        target = AtomicDir(output)
        try:
            write_layout(target.tmp, image, store, final_name, final_tag)
            actual = nar_sha256(str(target.tmp))
            _check_hash(expected, expected_text, actual)
            target.commit()
            return actual
        except BaseException:
            target.abort()
            raise
    if fmt == "docker-archive":
        entries = docker_archive_entries(image, store, repo_tag, layer_for)
    elif fmt == "oci-archive":
        entries = oci_archive_entries(image, final_name, final_tag)
    else:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if output is None:  # only the hash is wanted: stream it through the hasher
        pipe = PipelinedHashWriter(None)
        try:
            write_stream(entries, store, pipe.write)
            pipe.close()
        except BaseException:
            pipe.abort()
            raise
        actual = pipe.hash.digest()
        _check_hash(expected, expected_text, actual)
        return actual
    out = AtomicFile(output)
    try:
        actual = write_positional(entries, store, out.file.fileno())
        _check_hash(expected, expected_text, actual)
        out.commit()
        return actual
    except BaseException:
        out.abort()
        raise


def produce(source: RegistrySource, image: Image, fmt: str, final_name: str, final_tag: str,
            output: str | os.PathLike[str] | None, expected: bytes | None, expected_text: str = "") -> bytes:
    """Fetch the layers and write the output, overlapping the two where the format allows.

    A docker-archive stores layers uncompressed: each is decompressed once, straight into
    the output, as soon as its download lands, with the size its compressed form records.
    Should that record be wrong (a multi-member gzip, a layer over 4 GiB), the layers'
    exact sizes are measured and the output is written again.
    """
    store = source.store
    if fmt == "docker-archive":
        with source.background_fetch(image) as fetch:
            try:
                return write_output(image, store, fmt, final_name, final_tag, output, expected, expected_text,
                                    layer_for=fetch.layer)
            except SizeRecordWrong:
                fetch.wait_all()
    source.fetch_layers(image)
    return write_output(image, store, fmt, final_name, final_tag, output, expected, expected_text)


def _check_hash(expected: bytes | None, expected_text: str, actual: bytes) -> None:
    if expected is not None and expected != actual:
        raise HashMismatch(expected_text, actual.hex(), sri(actual))


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
) -> PullResult:
    """Pull IMAGE pinned by digest into `output` (None: compute the output's hash only)."""
    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    ref, typed_name = parse_image(image, digest)
    if not ref.digest:
        raise UsageError(
            f"{image} is not pinned: give --digest or IMAGE@sha256:…; "
            f"run `registry-tools prefetch {image}` to get the digest"
        )
    expected = parse_output_hash(hash) if hash is not None else None
    final_name = final_image_name or typed_name
    check_final_names(final_name, final_image_tag)
    wanted = wanted_platform(platform, os, arch, variant)
    if output is not None:
        (check_layout_destination if format == "oci" else check_destination)(output)
    own = session is None
    session = session or Session()
    try:
        source = session.source(ref)

        def run() -> tuple[Image, bytes]:
            image = source.resolve(Digest.parse(ref.digest), wanted, cross_arch=cross_arch,
                                   explicit_platform=bool(platform or os or arch or variant))
            sha = produce(source, image, format, final_name, final_image_tag, output, expected, hash or "")
            return image, sha
        resolved, actual = repairing(session.cache, run)
    finally:
        if own:
            session.close()
    return PullResult(
        image_name=ref.name, image_digest=Digest.parse(ref.digest),
        manifest_digest=resolved.manifest_descriptor.digest, platform=resolved.platform,
        final_image_name=final_name, final_image_tag=final_image_tag, format=format,
        sha256=actual, output=Path(output) if output is not None else None,
    )
