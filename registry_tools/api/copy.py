"""copy: any source to any destination, with skopeo's transport names.

Between registries a whole tree moves (an index with every manifest, keeping its
digest), blobs streamed from one registry to the other unchanged; `--platform` picks a
subset, written as a new index of exactly the entries copied. To and from archives and
layouts the engine's sources and destinations do the work: a registry image becomes an
archive as `pull` writes it, an archive or layout goes to a registry as `push` sends it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry_tools.api.pull import write_whole
from registry_tools.api.push import push
from registry_tools.engine import copy as engine_copy
from registry_tools.errors import InvalidReference, UsageError
from registry_tools.fileio import check_destination, check_layout_destination
from registry_tools.formats.destination import ArchiveDestination, ArchiveOptions
from registry_tools.formats.docker_archive import DockerArchiveImage, is_docker_archive
from registry_tools.formats.oci_layout import LayoutImage, LayoutReader
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest, sri
from registry_tools.model.platform import Choice, Platform, requested
from registry_tools.model.platform.choose import is_attestation
from registry_tools.model.platform.values import parse as parse_platform
from registry_tools.registry.destination import PushResult
from registry_tools.registry.mirror import copy_referrers, replicate
from registry_tools.registry.tree import read_tree
from registry_tools.registry.source import RegistryImage
from registry_tools.model.tree import image_platforms, platform_of
from registry_tools.session import Session

PREFIXES = {"docker://": "registry", "oci:": "oci", "oci-archive:": "oci-archive",
            "docker-archive:": "docker-archive"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Endpoint:
    """One side of a copy: a registry reference, or a path in one of the file formats."""

    kind: str  # registry, oci, oci-archive, docker-archive
    text: str
    ref: refs.Reference | None = None
    path: Path | None = None
    name: str | None = None  # a path's `:NAME` (the image in a layout; the name recorded in an archive)

    def __str__(self) -> str:
        return self.text


def _path_and_name(rest: str) -> tuple[Path, str | None]:
    """skopeo's PATH[:NAME]: the path ends at the first colon where what comes before it exists
    (or could be created: its directory exists); NAME may hold colons of its own (docker-archive's
    name:tag)."""
    if os.path.exists(rest) or ":" not in rest:
        return Path(rest), None
    cuts = [i for i, c in enumerate(rest) if c == ":"]
    for i in cuts:
        head = Path(rest[:i])
        if head.exists() or (head.parent.is_dir() and rest[:i] and not rest[:i].endswith("/")):
            return head, rest[i + 1:] or None
    return Path(rest[:cuts[0]]), rest[cuts[0] + 1:] or None


def _explicit_domain(text: str) -> bool:
    first = text.split("/", 1)[0]
    return "/" in text and ("." in first or ":" in first or first == "localhost")


def endpoint(text: str, role: str) -> Endpoint:
    """SRC or DEST as typed: a transport prefix (skopeo's), a path that exists or looks like one,
    else a registry reference; a destination must name its registry (no silent Docker Hub)."""
    for prefix, kind in PREFIXES.items():
        if text.startswith(prefix):
            rest = text[len(prefix):]
            if not rest:
                raise UsageError(f"{role} {text!r}: nothing after {prefix}")
            if kind == "registry":
                return Endpoint(kind, text, ref=_reference(rest, role))
            path, name = _path_and_name(rest)
            return Endpoint(kind, text, path=path, name=name)
    path, name = _path_and_name(text)
    if path.exists():
        kind = "oci" if path.is_dir() else ("docker-archive" if is_docker_archive(path, f"{role} {text}")
                                              else "oci-archive")
        return Endpoint(kind, text, path=path, name=name)
    if text.startswith(("/", "./", "../", "~")) or text.endswith(ARCHIVE_SUFFIXES) or text.endswith("/"):
        if role == "source":
            raise UsageError(f"source {text} does not exist")
        kind = "oci" if text.endswith("/") else "docker-archive"
        return Endpoint(kind, text, path=path, name=name)
    if role == "destination" and not _explicit_domain(text):
        raise UsageError(f"destination {text!r} is neither a path nor a reference naming its registry; write "
                         f"docker://{text} for Docker Hub, or docker-archive:/oci:/oci-archive: for a file")
    return Endpoint("registry", text, ref=_reference(text, role))


def _reference(text: str, role: str) -> refs.Reference:
    try:
        return refs.parse_normalized(text)
    except InvalidReference as e:
        raise UsageError(f"{role} {text!r} is not a registry reference or a path: {e}") from None


@dataclass
class CopyResult:
    source: str
    destination: str
    digest: Digest | None = None  # what the destination names now (manifest or index)
    source_digest: Digest | None = None  # what was read (differs when a subset was copied)
    platforms: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    pushed: PushResult | None = None
    sha256: bytes | None = None  # an archive's or layout's hash
    up_to_date: bool = False  # the destination held it all already: nothing was sent
    referrers: list[Digest] = field(default_factory=list)  # with --referrers: what was copied with it

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
        return out


def parse_platforms(texts: list[str] | None) -> list[Platform]:
    out: list[Platform] = []
    for text in texts or []:
        out += [parse_platform(t.strip()) for t in text.split(",") if t.strip()]
    return out


def copy(src: str, dest: str, *, platforms: list[Platform] | None = None, tags: list[str] | None = None,
         session: Session | None = None, cross_arch: bool = False, referrers: bool = False) -> CopyResult:
    """`registry-tools copy SRC DEST`; `referrers`: with everything that refers to what is copied
    (recursively) and cosign's legacy .sig/.att/.sbom tags."""
    source, target = endpoint(src, "source"), endpoint(dest, "destination")
    tags = list(tags or [])
    for t in tags:
        if not refs.TAG_RE.match(t):
            raise UsageError(f"--tag {t!r} is not a valid tag")
    if tags and target.kind != "registry":
        raise UsageError("--tag applies to a registry destination")
    own = session is None
    session = session or Session()
    try:
        if source.kind == "registry" and target.kind == "registry":
            return _between_registries(source, target, platforms or [], tags, session, referrers)
        if referrers:
            raise UsageError("--referrers copies between registries (signatures and SBOMs live beside an image "
                             "in its repository)")
        if len(platforms or []) > 1:
            raise UsageError("several platforms can be copied only between registries (as one index)")
        platform = platforms[0] if platforms else None
        if source.kind == "registry":
            return _to_file(source, target, platform, cross_arch, session)
        if target.kind == "registry":
            return _file_to_registry(source, target, tags, session)
        return _file_to_file(source, target, platform, session)
    finally:
        if own:
            session.close()


def _between_registries(source: Endpoint, target: Endpoint, platforms: list[Platform], tags: list[str],
                        session: Session, referrers: bool = False) -> CopyResult:
    src, dst = source.ref, target.ref
    assert src is not None and dst is not None
    origin = session.source(src)
    digest = Digest.parse(src.digest) if src.digest else origin.resolve_tag(src.tag or "latest")
    tags = list(dict.fromkeys(([dst.tag] if dst.tag else [src.tag] if src.tag and not dst.digest else []) + tags))
    r = replicate(session, origin, digest, dst, tags, session.progress, platforms)
    copied = r.tree.digest if r.tree is not None else digest
    names = [platform_of(c) for c in r.tree.children if platform_of(c)] if r.tree is not None else []
    result = CopyResult(str(source), str(target), copied, digest, names, tags, r.pushed, up_to_date=r.up_to_date)
    if referrers:
        tree = r.tree if r.tree is not None else read_tree(origin, mf.Descriptor("", digest, 0))
        result.referrers = copy_referrers(session, origin, dst, tree, session.progress)
    return result


def _to_file(source: Endpoint, target: Endpoint, platform: Platform | None, cross_arch: bool,
             session: Session) -> CopyResult:
    src = source.ref
    assert src is not None and target.path is not None
    origin = session.source(src)
    digest = Digest.parse(src.digest) if src.digest else origin.resolve_tag(src.tag or "latest")
    options = _names(target, src.name_only().familiar_string(), src.tag)
    (check_layout_destination if target.kind == "oci" else check_destination)(target.path)
    destination = ArchiveDestination(session.store, options, target.path, workers=session.workers)
    if platform is None and target.kind != "docker-archive":  # a layout holds a whole index, as a registry does
        tree, sha = write_whole(origin, digest, destination, session)
        return CopyResult(str(source), str(target), tree.digest, digest, image_platforms(tree), [], sha256=sha)
    choice = Choice(requested(platform), cross_arch, platform is not None)
    image, sha = engine_copy(RegistryImage(origin, digest, choice), destination, session.cache)
    return CopyResult(str(source), str(target), image.manifest_descriptor.digest, digest,
                      [str(image.chosen_platform)], [], sha256=sha)


def _names(target: Endpoint, name: str, tag: str | None) -> ArchiveOptions:
    """What a file records: oci:DIR:TAG names the tag (skopeo's reference annotation);
    docker-archive:FILE:NAME:TAG both; else the source's name and tag."""
    if target.name and target.kind != "docker-archive":
        if not refs.TAG_RE.match(target.name):
            raise UsageError(f"destination {target}: {target.name!r} is not a valid tag")
        return ArchiveOptions(target.kind, name, target.name)
    if target.name:
        try:
            final = refs.parse_normalized(target.name)
        except InvalidReference as e:
            raise UsageError(f"destination {target}: {e}") from None
        return ArchiveOptions(target.kind, final.name_only().familiar_string(), final.tag or "latest")
    return ArchiveOptions(target.kind, name, tag or "latest")


def _file_to_registry(source: Endpoint, target: Endpoint, tags: list[str], session: Session) -> CopyResult:
    assert source.path is not None and target.ref is not None
    if not source.path.exists():
        raise UsageError(f"source {source} does not exist")
    if source.kind == "docker-archive" and not is_docker_archive(source.path, f"source {source}"):
        raise UsageError(f"source {source} is not a docker-archive")
    text = f"{source.path}:{source.name}" if source.name else str(source.path)
    pushed = push(text, str(target.ref), session)
    assert pushed.digest is not None
    reg = session.registry(target.ref.domain)
    raw, ctype = session.source(target.ref.name_only()).manifest_bytes(pushed.digest)
    for tag in tags:
        if reg.manifest_digest(target.ref.path, tag) != pushed.digest:
            reg.put_manifest(target.ref.path, tag, raw, mf.parse(raw, ctype).media_type)
            pushed.manifests_put += 1
    doc = mf.parse(raw, ctype)
    platforms = [str(Platform.from_json(d.platform)) for d in doc.manifests
                 if d.platform and not is_attestation(d.raw)] if isinstance(doc, mf.Index) else []
    return CopyResult(str(source), str(target), pushed.digest, None, platforms,
                      [pushed.reference.rsplit(":", 1)[1]] + tags, pushed)


def _file_to_file(source: Endpoint, target: Endpoint, platform: Platform | None, session: Session) -> CopyResult:
    assert source.path is not None and target.path is not None
    if not source.path.exists():
        raise UsageError(f"source {source} does not exist")
    where = f"source {source}"
    if platform is None and source.kind != "docker-archive" and target.kind != "docker-archive":
        whole = _whole_layout(source, target, session)
        if whole is not None:
            return whole
    if source.kind == "docker-archive":
        image_source: Any = DockerArchiveImage(source.path, session.store, source.name, where=where)
    else:
        image_source = LayoutImage(source.path, session.store, source.name, platform, where=where)
    default = source.name if source.kind == "docker-archive" and source.name else "localhost/image"
    options = _names(target, refs.parse_normalized(default).name_only().familiar_string(),
                     source.name if source.kind != "docker-archive" else None)
    (check_layout_destination if target.kind == "oci" else check_destination)(target.path)
    destination = ArchiveDestination(session.store, options, target.path, workers=session.workers)
    image, sha = engine_copy(image_source, destination, session.cache)
    return CopyResult(str(source), str(target), image.manifest_descriptor.digest, None,
                      [str(image.chosen_platform)], [], sha256=sha)


def _whole_layout(source: Endpoint, target: Endpoint, session: Session) -> CopyResult | None:
    """A layout or oci-archive entry that is an index, copied whole into a layout or oci-archive
    (None: the entry is one image)."""
    assert source.path is not None and target.path is not None
    with LayoutReader(source.path, f"source {source}") as layout:
        entries = layout.entries(source.name)
        if len(entries) != 1 or entries[0].media_type not in mf.INDEX_TYPES:
            return None
        tree = layout.tree(entries[0], session.cache)
    (check_layout_destination if target.kind == "oci" else check_destination)(target.path)
    options = _names(target, "localhost/image", source.name)
    sha = ArchiveDestination(session.store, options, target.path, workers=session.workers).write_tree(tree)
    return CopyResult(str(source), str(target), tree.digest, tree.digest, image_platforms(tree), [], sha256=sha)
