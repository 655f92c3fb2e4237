"""Endpoints: where an image comes from or goes to, parsed once, from one table.

A SRC or DEST as a user types it (skopeo's transport names) becomes an `Endpoint`: a
registry reference (`docker://REF`, or a plain reference), `oci:DIR[:TAG]`,
`oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME:TAG]`, `podman:NAME[:TAG]`, or a
path that exists (its kind read from what it holds). An endpoint opens an image source
(one platform), a tree source (an index and what it names) and a destination that writes
either; what it can do it says as properties (`pinned`, `holds_trees`, `mirror`,
`repository`), so no other module asks which kind it is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

from registry_tools.engine import Destination, Source, TreeSource
from registry_tools.errors import InvalidReference, UsageError
from registry_tools.fileio import check_destination, check_layout_destination
from registry_tools.formats.destination import ArchiveDestination, ArchiveOptions
from registry_tools.formats.docker_archive import DockerArchiveImage, DockerArchiveTree, is_docker_archive
from registry_tools.formats.oci_layout import LayoutImage, LayoutTree
from registry_tools.formats.podman import PodmanDestination
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.image import Image
from registry_tools.model.platform import Choice
from registry_tools.registry.destination import RegistryDestination
from registry_tools.registry.remote import RegistryImage, RegistryTree
from registry_tools.session import Session

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Writing:
    """What a destination records and checks, besides the image: the name and tag a file records
    where the endpoint names none (the source's, or what the user asked for), the tag a registry
    gets where the endpoint names none (None: by digest), more tags, annotations, a pinned hash,
    and podman's own options for a podman destination (`--root`, `--storage-driver`, …)."""

    name: str = "localhost/image"
    tag: str | None = "latest"
    more_tags: tuple[str, ...] = ()
    tag_of: Callable[[Image], str] | None = None  # a tag from the image itself (a build's default)
    annotations: dict[str, str] = field(default_factory=dict)
    expected: bytes | None = None  # the sha256 a file output must have (checked before it is kept)
    expected_text: str = ""
    keep_others: bool = False  # an OCI layout: add to it (other tags kept) instead of replacing it
    podman_args: tuple[str, ...] = ()  # podman's own options (none: REGISTRY_TOOLS_PODMAN_ARGS)

    def check_podman(self) -> None:
        """A destination other than podman's storage refuses podman's options."""
        if self.podman_args:
            raise UsageError("--podman-arg applies to a podman: destination")


class Endpoint:
    """One side of a copy. Subclasses are the rows of the table below."""

    scheme: ClassVar[str]
    pinned = True  # names content that cannot move (a digest, a file)
    holds_trees = True  # can hold an index and everything it names
    mirror = False  # a copy to it keeps the source's shape: an index (or the subset of one) stays one
    holds_many = False  # other images stay beside what is written (an index can be edited in place)
    repository: refs.Reference | None = None  # the registry repository it names (referrers, signatures)

    role = "source"  # how messages name it: source, destination, fromImage

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text

    def names(self) -> tuple[str | None, str | None]:
        """The image name and the tag this endpoint itself names (a reference's; a file's NAME:TAG)."""
        return None, None

    def with_tag(self, tag: str) -> "Endpoint":
        """The same place, naming `tag`."""
        raise UsageError(f"{self} takes no tag")

    def display(self) -> str:
        """The endpoint as messages name it (normalised)."""
        return self.text

    def image(self, session: Session, choice: Choice, compressor: str = "gz") -> Source:
        """The image for `choice` (from an index); `compressor`: how layers stored uncompressed (a
        docker-archive's) are compressed on the way."""
        raise UsageError(f"{self}: {self.scheme} is a destination only")

    def tree(self, session: Session) -> TreeSource:
        raise UsageError(f"{self}: {self.scheme} is a destination only")

    def destination(self, session: Session, writing: Writing) -> Destination[Any]:
        raise NotImplementedError


class RegistryEndpoint(Endpoint):
    """`docker://REF` or a plain reference: a repository, a tag or a digest in a registry."""

    scheme = "docker://"
    mirror = True
    holds_many = True

    def __init__(self, text: str, ref: refs.Reference):
        super().__init__(text)
        self.ref = ref
        self.repository = ref
        self.pinned = bool(ref.digest)

    def names(self) -> tuple[str | None, str | None]:
        return self.ref.name_only().familiar_string(), self.ref.tag or None

    def with_tag(self, tag: str) -> "RegistryEndpoint":
        return RegistryEndpoint(self.text, self.ref.name_only().with_tag(tag))

    def display(self) -> str:
        return str(self.ref)

    def _digest(self) -> Digest | None:
        return Digest.parse(self.ref.digest) if self.ref.digest else None

    def image(self, session: Session, choice: Choice, compressor: str = "gz") -> Source:
        source = session.source(self.ref)
        return RegistryImage(source, self._digest() or source.resolve_tag(self.ref.tag or "latest"), choice)

    def tree(self, session: Session) -> TreeSource:
        return RegistryTree(session.source(self.ref), self.ref.tag or None, self._digest())

    def destination(self, session: Session, writing: Writing) -> Destination[Any]:
        writing.check_podman()
        own = [self.ref.tag] if self.ref.tag else [] if self.ref.digest else [writing.tag] if writing.tag else []
        tags = list(dict.fromkeys(own + list(writing.more_tags)))
        return RegistryDestination(session, self.ref, tags, None if tags else writing.tag_of, writing.annotations)


class FileEndpoint(Endpoint):
    """A file or directory, and the name (a tag, or a docker-archive's NAME:TAG) after its path;
    no path: the output is only hashed (what prefetch pins)."""

    format: ClassVar[str]

    def __init__(self, text: str, path: Path | None, name: str | None):
        super().__init__(text)
        self.path = path
        self.name = name

    def names(self) -> tuple[str | None, str | None]:
        return None, self.name

    def with_tag(self, tag: str) -> "FileEndpoint":
        return type(self)(self.text, self.path, tag)

    def display(self) -> str:
        return f"{self.scheme}{self.path}" + (f":{self.name}" if self.name else "")

    def _existing(self) -> Path:
        if self.path is None or not self.path.exists():
            raise UsageError(f"{self.role} {self.text} does not exist")
        return self.path

    def check(self, keep_others: bool = False) -> None:
        """Fail before any work if the output cannot be written (its directory missing, or a
        directory that is not a layout where a layout would replace it)."""
        if self.path is not None:
            check_destination(self.path)

    def options(self, writing: Writing) -> ArchiveOptions:
        name, tag = self.names()
        if tag is not None and not refs.TAG_RE.match(tag):
            raise UsageError(f"destination {self}: {tag!r} is not a valid tag")
        tag = tag or writing.tag or ("" if writing.tag_of else "latest")  # "": the image names its tag
        return ArchiveOptions(self.format, name or writing.name, tag, writing.expected, writing.expected_text,
                              writing.keep_others)

    def destination(self, session: Session, writing: Writing) -> Destination[Any]:
        if writing.more_tags:
            raise UsageError("--tag applies to a registry destination")
        writing.check_podman()
        self.check(writing.keep_others)
        return ArchiveDestination(session.store, self.options(writing), self.path, writing.tag_of,
                                  workers=session.workers)


class LayoutEndpoint(FileEndpoint):
    """`oci:DIR[:TAG]`: an OCI image layout directory."""

    scheme = "oci:"
    format = "oci"
    holds_many = True

    def check(self, keep_others: bool = False) -> None:
        """A layout replaces only an empty directory or a layout; one added to must be a layout or new."""
        if self.path is not None:
            (check_destination if keep_others else check_layout_destination)(self.path)

    def image(self, session: Session, choice: Choice, compressor: str = "gz") -> Source:
        return LayoutImage(self._existing(), session.store, self.name, choice, where=f"{self.role} {self}")

    def tree(self, session: Session) -> TreeSource:
        return LayoutTree(self._existing(), session.store, self.name, where=f"{self.role} {self}")


class OciArchiveEndpoint(LayoutEndpoint):
    """`oci-archive:FILE[:TAG]`: an OCI image layout in a tar."""

    scheme = "oci-archive:"
    format = "oci-archive"
    holds_many = False

    def check(self, keep_others: bool = False) -> None:
        FileEndpoint.check(self)


class DockerArchiveEndpoint(FileEndpoint):
    """`docker-archive:FILE[:NAME:TAG]`: `docker save`'s format; one image."""

    scheme = "docker-archive:"
    format = "docker-archive"
    holds_trees = False

    def names(self) -> tuple[str | None, str | None]:
        if not self.name:
            return None, None
        try:
            final = refs.parse_normalized(self.name)
        except InvalidReference as e:
            raise UsageError(f"{self}: {e}") from None
        return final.name_only().familiar_string(), final.tag or "latest"

    def _archive(self, session: Session, compressor: str = "gz") -> DockerArchiveImage:
        path = self._existing()
        if not (path.is_file() and is_docker_archive(path, f"{self.role} {self}")):
            raise UsageError(f"{self.role} {self} is not a docker-archive")
        return DockerArchiveImage(path, session.store, self.name, compressor, where=f"{self.role} {self}")

    def image(self, session: Session, choice: Choice, compressor: str = "gz") -> Source:
        return self._archive(session, compressor)

    def tree(self, session: Session) -> TreeSource:
        return DockerArchiveTree(self._archive(session))


class PodmanEndpoint(Endpoint):
    """`podman:NAME[:TAG]`: podman's image storage (through `podman load`); a destination."""

    scheme = "podman:"
    holds_trees = False

    def __init__(self, text: str, ref: refs.Reference):
        super().__init__(text)
        if ref.digest:
            raise UsageError(f"{text}: podman names an image NAME[:TAG], not by digest (it takes the config's "
                             "digest as the image ID)")
        self.ref = ref

    def names(self) -> tuple[str | None, str | None]:
        return self.ref.name_only().familiar_string(), self.ref.tag or None

    def destination(self, session: Session, writing: Writing) -> Destination[Any]:
        if writing.more_tags:
            raise UsageError("--tag applies to a registry destination")
        name, tag = self.names()
        return PodmanDestination(session.store, f"{name}:{tag or writing.tag or 'latest'}", session.workers,
                                 writing.podman_args)


# --- the table ------------------------------------------------------------------------------------

def _reference(text: str, role: str) -> refs.Reference:
    try:
        return refs.parse_normalized(text)
    except InvalidReference as e:
        raise UsageError(f"{role} {text!r} is not a registry reference or a path: {e}") from None


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


def _file(kind: type[FileEndpoint]) -> Callable[[str, str, str], Endpoint]:
    def parse(text: str, rest: str, role: str) -> Endpoint:
        return kind(text, *_path_and_name(rest))
    return parse


TRANSPORTS: dict[str, Callable[[str, str, str], Endpoint]] = {
    "docker://": lambda text, rest, role: RegistryEndpoint(text, _reference(rest, role)),
    "oci:": _file(LayoutEndpoint),
    "oci-archive:": _file(OciArchiveEndpoint),
    "docker-archive:": _file(DockerArchiveEndpoint),
    "podman:": lambda text, rest, role: PodmanEndpoint(text, _reference(rest, role)),
}
FORMATS: dict[str, type[FileEndpoint]] = {"docker-archive": DockerArchiveEndpoint, "oci": LayoutEndpoint,
                                          "oci-archive": OciArchiveEndpoint}


def _explicit_domain(text: str) -> bool:
    first = text.split("/", 1)[0]
    return "/" in text and ("." in first or ":" in first or first == "localhost")


def _existing_path(text: str, path: Path, name: str | None, role: str) -> Endpoint:
    """A path that exists: a directory is a layout; a tar, whichever of the archives it holds."""
    if path.is_dir():
        return LayoutEndpoint(text, path, name)
    if is_docker_archive(path, f"{role} {text}"):
        return DockerArchiveEndpoint(text, path, name)
    return OciArchiveEndpoint(text, path, name)


def parse(text: str, role: str = "source") -> Endpoint:
    """SRC or DEST as typed: a transport prefix (skopeo's), a path that exists or looks like one,
    else a registry reference; a destination must name its registry (no silent Docker Hub)."""
    found = _parse(text, role)
    found.role = role
    return found


def _parse(text: str, role: str) -> Endpoint:
    for prefix, make in TRANSPORTS.items():
        if text.startswith(prefix):
            rest = text[len(prefix):]
            if not rest:
                raise UsageError(f"{role} {text!r}: nothing after {prefix}")
            return make(text, rest, role)
    path, name = _path_and_name(text)
    if path.exists():
        return _existing_path(text, path, name, role)
    if text.startswith(("/", "./", "../", "~")) or text.endswith(ARCHIVE_SUFFIXES) or text.endswith("/"):
        if role != "destination":
            raise UsageError(f"{role} {text} does not exist")
        return (LayoutEndpoint if text.endswith("/") else DockerArchiveEndpoint)(text, path, name)
    if role == "destination" and not _explicit_domain(text):
        raise UsageError(f"destination {text!r} is neither a path nor a reference naming its registry; write "
                         f"docker://{text} for Docker Hub, or docker-archive:/oci:/oci-archive: for a file")
    return RegistryEndpoint(text, _reference(text, role))


def written_reference(text: str) -> refs.Reference:
    """REF of a command that writes into REF's repository (tag, delete, attach, sign): its registry
    named as every destination's is, a host or docker:// for Docker Hub (no silent Docker Hub)."""
    if text.startswith("docker://"):
        return _reference(text[len("docker://"):], "reference")
    if not _explicit_domain(text):
        raise UsageError(f"{text!r} is not a reference naming its registry, and this command writes there; write "
                         f"docker://{text} for Docker Hub")
    return _reference(text, "reference")


def output(path: str | os.PathLike[str] | None, format: str) -> FileEndpoint:
    """`-o PATH` with `--format`: the file endpoint of that format (a pull's); None: the output
    is only hashed (prefetch)."""
    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[format](str(path or ""), Path(path) if path is not None else None, None)


def pinned_reference(text: str) -> RegistryEndpoint:
    """A registry reference as a source (pull, prefetch, a build's fromImage by reference)."""
    return RegistryEndpoint(text, _reference(text, "image"))


def with_names(writing: Writing, source: Endpoint) -> Writing:
    """What a file records when the source names the image: its name, and its tag if it has one."""
    name, tag = source.names()
    return replace(writing, name=name or writing.name, tag=tag or writing.tag)
