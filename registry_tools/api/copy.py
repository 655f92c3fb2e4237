"""copy: any source endpoint to any destination endpoint, with skopeo's transport names,
through optional transforms (the image surgery commands are copies with a transform).

What moves is decided by what the destination can hold, never by its kind: a destination
that mirrors (a registry) takes the source's shape (an index whole, keeping its digest,
or the new index of exactly the platforms asked for); any other destination that holds
indexes (a layout, an oci-archive) takes the whole tree unless a platform is named; one
that holds a single image (a docker-archive, podman) takes the image of one platform.
Between registries blobs go straight from one to the other, unchanged and verified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from registry_tools import endpoint
from registry_tools.engine import Transform, copy as copy_image, copy_tree
from registry_tools.errors import UsageError
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest, sri
from registry_tools.model.platform import Choice, Platform, host_platform
from registry_tools.model.platform.values import parse as parse_platform
from registry_tools.model.tree import ManifestNode, image_platforms
from registry_tools.registry.mirror import copy_referrers
from registry_tools.registry.sink import PushResult
from registry_tools.registry.tree import read_tree
from registry_tools.session import Session, using


@dataclass(frozen=True)
class CopyOptions:
    """SRC and DEST as typed; the platforms to copy (none: the whole index where the destination
    holds one, else this machine's); `all`: every platform, said explicitly; more tags at a
    registry DEST; `referrers`: what refers to the image too; `transforms`: edits on the way;
    `podman_args`: podman's own options for a podman: DEST."""

    source: str
    dest: str
    platforms: Sequence[Platform] = ()
    all: bool = False
    tags: Sequence[str] = ()
    cross_arch: bool = False
    referrers: bool = False
    transforms: Sequence[Transform] = ()
    podman_args: Sequence[str] = ()


@dataclass
class CopyResult:
    source: str
    destination: str
    digest: Digest | None = None  # what the destination names now (manifest or index)
    source_digest: Digest | None = None  # what was read (differs when a subset was copied or it was edited)
    platforms: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    pushed: PushResult | None = None
    sha256: bytes | None = None  # an archive's or layout's hash
    up_to_date: bool = False  # the destination held it all already: nothing was sent
    referrers: list[Digest] = field(default_factory=list)  # with --referrers: what was copied with it
    loaded: str | None = None  # podman: the name it holds the image under

    def to_json(self) -> dict[str, Any]:
        p = self.pushed
        out: dict[str, Any] = {
            "source": self.source, "destination": self.destination,
            "digest": str(self.digest) if self.digest else None,
            "sourceDigest": str(self.source_digest) if self.source_digest else None,
            "platforms": self.platforms, "tags": self.tags, "upToDate": self.up_to_date,
            "blobsUploaded": len(p.uploaded) if p else 0, "blobsMounted": len(p.mounted) if p else 0,
            "blobsSkipped": len(p.present) if p else 0, "bytesSent": p.bytes_uploaded if p else 0,
            "manifestsPut": p.manifests_put if p else 0, "referrers": [str(d) for d in self.referrers],
        }
        if self.sha256 is not None:
            out["hash"] = sri(self.sha256)
        if self.loaded is not None:
            out["loaded"] = self.loaded
        return out

    def said(self, result: object) -> None:
        """What the destination said: a push, an archive's hash, or the name podman holds it under."""
        if isinstance(result, PushResult):
            self.pushed = result
        elif isinstance(result, bytes):
            self.sha256 = result
        elif result is not None:
            self.loaded = str(getattr(result, "reference", result))


def parse_platforms(texts: list[str] | None) -> list[Platform]:
    out: list[Platform] = []
    for text in texts or []:
        out += [parse_platform(t.strip()) for t in text.split(",") if t.strip()]
    return out


def _whole_tree(o: CopyOptions, dest: endpoint.Endpoint) -> bool:
    """Whether a tree moves (else one image): see the module's docstring. An edit asked for one
    platform (or none) writes that platform's image; `--all` edits every image of the index."""
    if o.all:
        if o.platforms:
            raise UsageError("--all copies every platform: drop --platform")
        if not dest.holds_trees:
            raise UsageError(f"{dest} holds one image: choose its platform with --platform, not --all")
        return True
    if len(o.platforms) > 1:
        if not dest.holds_trees:
            raise UsageError(f"{dest} holds one image: name one platform")
        return True
    if o.transforms:
        return False
    return dest.mirror or (not o.platforms and dest.holds_trees)


def copy(options: CopyOptions, session: Session | None = None) -> CopyResult:
    """`registry-tools copy SRC DEST` (and every command that edits an image on its way)."""
    o = options
    src, dst = endpoint.parse(o.source, "source"), endpoint.parse(o.dest, "destination")
    for t in o.tags:
        if not refs.TAG_RE.match(t):
            raise UsageError(f"--tag {t!r} is not a valid tag")
    if o.referrers and (src.repository is None or dst.repository is None):
        raise UsageError("--referrers copies between registries (signatures and SBOMs live beside an image in its "
                         "repository)")
    writing = endpoint.with_names(endpoint.Writing(tag=None, more_tags=tuple(o.tags),
                                                   podman_args=tuple(o.podman_args)), src)
    tree = _whole_tree(o, dst)
    with using(session) as s:
        result = CopyResult(str(src), str(dst))
        destination = dst.destination(s, writing)
        if tree:
            from registry_tools.transforms import each_image, needs_content

            edit = each_image(o.transforms, s) if o.transforms else None
            source = src.tree(s)
            done = copy_tree(source, destination, s.cache, o.platforms, edit, needs_content(o.transforms))
            result.said(done.result)
            result.source_digest, result.up_to_date = done.source_digest, done.up_to_date
            result.digest = done.tree.digest if done.tree is not None else done.source_digest
            # held already (one HEAD said so): its platforms from the top manifest alone, one read
            written = done.tree if done.tree is not None else source.read((), shallow=True)
            result.platforms = image_platforms(written)
            if o.referrers:
                _referrers(s, src, dst, done.tree, done.source_digest, result)
        else:
            wanted = o.platforms[0] if o.platforms else host_platform()
            image, said = copy_image(src.image(s, Choice(wanted, o.cross_arch, bool(o.platforms))), destination,
                                     s.cache, o.transforms)
            result.said(said)
            result.digest = image.manifest_descriptor.digest
            result.platforms = [str(image.chosen_platform)]
        if result.pushed is not None and "@" not in result.pushed.reference:
            result.tags = list(dict.fromkeys([result.pushed.reference.rpartition(":")[2], *o.tags]))
        return result


def _referrers(s: Session, src: endpoint.Endpoint, dst: endpoint.Endpoint, tree: ManifestNode | None,
               digest: Digest, result: CopyResult) -> None:
    assert src.repository is not None and dst.repository is not None
    origin = s.source(src.repository)
    from registry_tools.model import manifest as mf

    tree = tree if tree is not None else read_tree(origin, mf.Descriptor("", digest, 0))
    result.referrers = copy_referrers(s, origin, dst.repository, tree, s.progress)
