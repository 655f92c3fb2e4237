"""What several operations take alike, each checked once: which platform (or every platform),
the name and tag an archive records, and an image argument as the user typed it.

Every operation takes one options value (go-containerregistry's `remote.Option`s land in
one struct the same way); these are its shared parts.
"""
from __future__ import annotations

from dataclasses import dataclass

from registry_tools.errors import InvalidReference, UsageError
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.platform import Choice, Platform, requested

ALL = "all"


@dataclass(frozen=True)
class Platforms:
    """`--platform OS/ARCH[/VARIANT]` (or `all`), `--os/--arch/--variant`, `--allow-cross-arch`, `--all`."""

    platform: str | Platform | None = None
    os: str | None = None
    arch: str | None = None
    variant: str | None = None
    cross_arch: bool = False
    all: bool = False

    @property
    def explicit(self) -> bool:
        return bool(self.platform or self.os or self.arch or self.variant)

    def wants_all(self) -> bool:
        """`--all` or `--platform all`: the whole index."""
        p = self.platform
        return self.all or (isinstance(p, str) and p.strip().lower() == ALL)

    def whole(self) -> bool:
        """Whether the whole index is asked for, checked against the other platform options."""
        if not self.wants_all():
            return False
        p = self.platform
        if self.os or self.arch or self.variant or (p is not None and not (isinstance(p, str) and
                                                                             p.strip().lower() == ALL)):
            raise UsageError("--all takes every platform: drop --platform/--os/--arch/--variant")
        return True

    def choice(self) -> Choice:
        """The platform to choose from an index (default: linux and this machine's CPU)."""
        platform = None if self.wants_all() else self.platform
        return Choice(requested(platform, self.os, self.arch, self.variant), self.cross_arch, self.explicit)


def check_all_format(format: str) -> None:
    if format == "docker-archive":
        raise UsageError("a docker-archive holds one platform: pull every platform (--all) with --format oci or "
                         "--format oci-archive, or choose one with --platform")


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
