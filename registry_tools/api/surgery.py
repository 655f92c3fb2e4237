"""mutate, append, flatten, rebase and check-base: image surgery without pulling.

Each edit is a copy from SRC to DEST (any endpoints) through one transform of
`registry_tools.surgery`: one platform's image (`platform`, by default this machine's), or
with `all` every image of an index under a new index (attestations dropped: they name the
old digests). Blobs the edit does not touch are never downloaded, repacked or uploaded
again: between registries the destination HEADs or mounts them. `check_base` says whether
the base an image records (`org.opencontainers.image.base.name`) now names another digest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from registry_tools import endpoint
from registry_tools.api.copy import CopyOptions, CopyResult, copy
from registry_tools.builder.base import BASE_DIGEST, BASE_NAME
from registry_tools.builder.spec import parse_time
from registry_tools.engine import Need, Transform
from registry_tools.errors import UsageError
from registry_tools.model.digest import Digest
from registry_tools.model.platform import Choice, Platform, requested
from registry_tools.session import Session, using
from registry_tools.surgery import Append, Edits, Flatten, Mutate, Rebase, recorded_endpoint
from registry_tools.transforms import FORMATS, manifest_annotations

PORT = re.compile(r"^([0-9]{1,5})(?:/(tcp|udp|sctp))?$")


@dataclass(frozen=True)
class Ends:
    """SRC and DEST as typed; the platform to edit (None: this machine's), or `all` of an index;
    `podman_args`: podman's own options for a podman: DEST."""

    source: str
    dest: str
    platform: Platform | None = None
    all: bool = False
    podman_args: Sequence[str] = ()


@dataclass(frozen=True)
class MutateOptions:
    ends: Ends
    edits: Edits


@dataclass(frozen=True)
class AppendOptions:
    ends: Ends
    layers: Sequence[str]  # directories (packed as the builder packs) or tars (taken as they are)


@dataclass(frozen=True)
class FlattenOptions:
    ends: Ends


@dataclass(frozen=True)
class RebaseOptions:
    """None: the base the image records (the old one at its digest, the new one as its name
    resolves now)."""

    ends: Ends
    old_base: str | None = None
    new_base: str | None = None


@dataclass(frozen=True)
class CheckBaseOptions:
    source: str
    platform: Platform | None = None


def pairs(texts: Sequence[str], flag: str) -> dict[str, str]:
    """KEY=VALUE options as a map (a key given twice: the last one)."""
    out: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {text!r}: expected KEY=VALUE")
        out[key] = value
    return out


def port(text: str) -> str:
    """--expose PORT[/PROTO] as the config names it: 8080/tcp."""
    m = PORT.match(text)
    if not m or not 1 <= int(m.group(1)) <= 65535:
        raise UsageError(f"--expose {text!r}: expected PORT[/tcp|udp|sctp], PORT from 1 to 65535")
    return f"{int(m.group(1))}/{m.group(2) or 'tcp'}"


def created(text: str) -> str:
    """--created TIME|now as RFC 3339 (UTC)."""
    try:
        return parse_time("--created", text)[0]
    except UsageError:
        raise UsageError(f"--created {text!r}: expected an ISO-8601 time from 1970 to 9999, or now") from None


def check_edits(edits: Edits) -> Edits:
    """The edits, refused in one line where a value cannot be written as asked."""
    for item in edits.env:
        if "=" not in item or not item.split("=", 1)[0]:
            raise UsageError(f"--env {item!r}: expected KEY=VALUE")
    for key in edits.env_unset:
        if not key or "=" in key:
            raise UsageError(f"--env-unset {key!r}: expected a variable's name")
    for p in edits.ports:
        if port(p) != p:
            raise UsageError(f"--expose {p!r}: expected PORT/PROTO")
    if edits.format is not None and edits.format not in FORMATS:
        raise UsageError(f"--format {edits.format!r}: choose one of {', '.join(FORMATS)}")
    if edits.format == "docker" and edits.annotations:
        raise UsageError("--annotation needs an OCI manifest: a Docker manifest has no place for annotations")
    return edits


def _edit(ends: Ends, make: Callable[[Session], Transform], session: Session | None) -> CopyResult:
    with using(session) as s:
        return copy(CopyOptions(ends.source, ends.dest, [ends.platform] if ends.platform else [], ends.all,
                                transforms=(make(s),), podman_args=ends.podman_args), s)


def mutate(options: MutateOptions, session: Session | None = None) -> CopyResult:
    """`registry-tools mutate SRC DEST`: the config, annotations or format edited; no layer touched."""
    edits = check_edits(options.edits)
    return _edit(options.ends, lambda s: Mutate(edits, s.cache), session)


def append(options: AppendOptions, session: Session | None = None) -> CopyResult:
    """`registry-tools append SRC DEST --layer DIR|TAR ...`: new layers on top."""
    if not options.layers:
        raise UsageError("append needs at least one --layer DIR|TAR")
    paths = [Path(p) for p in options.layers]
    return _edit(options.ends, lambda s: Append(paths, s.cache), session)


def flatten(options: FlattenOptions, session: Session | None = None) -> CopyResult:
    """`registry-tools flatten SRC DEST`: one layer holding the applied filesystem."""
    return _edit(options.ends, lambda s: Flatten(s.cache), session)


def rebase(options: RebaseOptions, session: Session | None = None) -> CopyResult:
    """`registry-tools rebase SRC DEST`: the old base's layers swapped for the new base's."""
    local = endpoint.parse(options.ends.source, "source").repository is None
    return _edit(options.ends, lambda s: Rebase(options.old_base, options.new_base, s, local), session)


@dataclass(frozen=True)
class BaseCheck:
    source: str
    manifest_digest: Digest
    platform: str
    base_name: str
    recorded: Digest  # the base's digest when the image was built (or last rebased)
    current: Digest  # what the base's name names now

    @property
    def moved(self) -> bool:
        return self.recorded != self.current

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "manifestDigest": str(self.manifest_digest), "platform": self.platform,
                "baseName": self.base_name, "baseDigest": str(self.recorded), "currentDigest": str(self.current),
                "moved": self.moved}


def check_base(options: CheckBaseOptions, session: Session | None = None) -> BaseCheck:
    """`registry-tools check-base SRC`: the base SRC records, and what its name resolves to now."""
    src = endpoint.parse(options.source, "source")
    choice = Choice(requested(options.platform), False, options.platform is not None)
    with using(session) as s:
        with src.image(s, choice).open(Need.RELAY) as supply:
            image = supply.image()
        notes = manifest_annotations(image)
        name, digest = notes.get(BASE_NAME), notes.get(BASE_DIGEST)
        if not name or not digest:
            raise UsageError(f"{src} ({image.manifest_descriptor.digest}) records no base image "
                             f"({BASE_NAME} and {BASE_DIGEST}): nothing to check")
        recorded = Digest.parse(digest)
        base = recorded_endpoint(name, src.repository is None).image(s, Choice(image.chosen_platform, False, True))
        with base.open(Need.RELAY) as now:
            current = now.image().manifest_descriptor.digest
        return BaseCheck(str(src), image.manifest_descriptor.digest, str(image.chosen_platform), name, recorded,
                         current)
