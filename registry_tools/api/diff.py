"""diff: what changed between two images, at three levels, in one command.

"Why did my rebuild change?" without unpacking anything: both images are opened through the
endpoints' own sources for one platform, as a copy to a registry would open them, so a
registry image costs its manifest and config and no layer. Then:

- keys: the manifest's (its media type, annotations, …; not its config and layer lists) and
  the config's, each leaf a key with its old and new value (`config.Env.NAME`, by name, not
  by position; `config.Labels["org.example"]`; `history[3].created_by`). `rootfs.diff_ids`
  is left to the layers.
- layers: matched by diff_id in order (difflib's longest matching runs), the layers between
  two matches paired by position: a pair with other diff_ids changed, the rest added or
  removed; a match stored as other bytes (another compression or media type) recompressed.
- files (unless `files` is off): the tar of every layer that differs is streamed, verified
  against its digest and diff_id, never held: each entry's type, size, mode, owner, mtime,
  link target and content sha256. A changed pair's file sets are compared by path; an added
  or removed layer lists its files as added or removed. Every change is counted; `max_files`
  of each kind are listed per layer, sorted by path.

The images are the same when their manifests are (one digest); everything else is a
difference, and the result says at which level.
"""
from __future__ import annotations

import difflib
import json
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from registry_tools import endpoint
from registry_tools.api.options import Platforms
from registry_tools.cancel import Cancel
from registry_tools.engine import Need, repairing
from registry_tools.errors import UsageError
from registry_tools.formats.listing import FileChanges, compare, layer_files, listed
from registry_tools.model import manifest as mf
from registry_tools.model.image import BlobOrigin, Image, Layer
from registry_tools.model.platform import Choice
from registry_tools.session import Session, using
from registry_tools.store.origin import Origins
from registry_tools.workers import Group

MISSING: Any = object()  # a key one side does not have
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class DiffOptions:
    """A and B as typed (any source endpoints); the platform to compare where either is an index;
    `files`: compare the files of the layers that differ (reads them); `max_files`: how many file
    changes of each kind to list per layer (all are counted)."""

    a: str
    b: str
    platforms: Platforms = field(default_factory=Platforms)
    files: bool = True
    max_files: int = 1000


@dataclass(frozen=True)
class Side:
    """One of the two images."""

    endpoint: str
    image: Image

    def to_json(self) -> dict[str, Any]:
        i = self.image
        return {"reference": self.endpoint, "manifestDigest": str(i.manifest_descriptor.digest),
                "configDigest": str(i.config_digest), "mediaType": i.manifest.media_type,
                "platform": str(i.chosen_platform), "layers": len(i.layers)}


@dataclass(frozen=True)
class KeyChange:
    """A leaf of the manifest or config that one side has, the other not, or with another value."""

    path: tuple[str | int, ...]
    old: Any = MISSING
    new: Any = MISSING

    @property
    def change(self) -> str:
        return "added" if self.old is MISSING else "removed" if self.new is MISSING else "changed"

    @property
    def key(self) -> str:
        """The path as one string: `config.Env.PATH`, `config.Labels["a.b"]`, `history[2].created`."""
        out = ""
        for part in self.path:
            if isinstance(part, int):
                out += f"[{part}]"
            elif IDENTIFIER.match(part):
                out += f".{part}" if out else part
            else:
                out += f"[{json.dumps(part)}]"
        return out

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"key": self.key, "path": list(self.path), "change": self.change}
        if self.old is not MISSING:
            doc["old"] = self.old
        if self.new is not MISSING:
            doc["new"] = self.new
        return doc


@dataclass
class LayerChange:
    """A layer that differs: its position (1-based) and itself on each side that has it; for a pair
    or a layer alone, what changed among its files (None: not compared)."""

    change: str  # added, removed, changed, recompressed
    a: tuple[int, Layer] | None
    b: tuple[int, Layer] | None
    files: FileChanges | None = None

    @property
    def needs_files(self) -> bool:
        return self.change != "recompressed"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"change": self.change, "a": _layer_json(self.a), "b": _layer_json(self.b)}
        if self.files is not None:
            doc["files"] = self.files.to_json()
        return doc


def _layer_json(side: tuple[int, Layer] | None) -> dict[str, Any] | None:
    if side is None:
        return None
    position, layer = side
    d = layer.descriptor
    return {"position": position, "digest": str(d.digest), "size": d.size, "diffId": str(layer.diff_id),
            "mediaType": d.media_type}


@dataclass
class DiffResult:
    a: Side
    b: Side
    manifest: list[KeyChange]
    config: list[KeyChange]
    layers: list[LayerChange]
    files: bool  # whether the files of the layers that differ were compared

    @property
    def same(self) -> bool:
        return self.a.image.manifest_descriptor.digest == self.b.image.manifest_descriptor.digest

    def to_json(self) -> dict[str, Any]:
        return {"same": self.same, "a": self.a.to_json(), "b": self.b.to_json(),
                "manifest": [k.to_json() for k in self.manifest], "config": [k.to_json() for k in self.config],
                "layers": [layer.to_json() for layer in self.layers], "files": self.files}


# --- keys ------------------------------------------------------------------------------------

def flatten(doc: Any, path: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], Any]:
    """Every leaf of a JSON document by its path. An object's members and a list of objects' items
    are followed; an Env list is read by name (`NAME=value`; a bare `NAME`: null); any other list,
    and an empty object, is one value."""
    out: dict[tuple[str | int, ...], Any] = {}
    if isinstance(doc, dict) and doc:
        for k, v in doc.items():
            out.update(flatten(v, (*path, k)))
    elif isinstance(doc, list) and path and path[-1] == "Env" and all(isinstance(e, str) for e in doc):
        for e in doc:
            name, sep, value = e.partition("=")
            out[(*path, name)] = value if sep else None  # as a runtime reads it: the last one counts
    elif isinstance(doc, list) and doc and all(isinstance(e, dict) for e in doc):
        for i, e in enumerate(doc):
            out.update(flatten(e, (*path, i)))
    else:
        out[path] = doc
    return out


def key_changes(a: Any, b: Any, skip: tuple[tuple[str, ...], ...] = ()) -> list[KeyChange]:
    """The leaves that differ between two documents (paths under `skip` left out), in path order."""
    fa, fb = flatten(a), flatten(b)
    out = []
    for path in sorted(set(fa) | set(fb), key=lambda p: [(isinstance(x, str), x) for x in p]):
        if any(path[:len(s)] == s for s in skip):
            continue
        old, new = fa.get(path, MISSING), fb.get(path, MISSING)
        if old is MISSING or new is MISSING or old != new or type(old) is not type(new):
            out.append(KeyChange(path, old, new))
    return out


def _manifest_doc(image: Image) -> dict[str, Any]:
    doc = mf.load_json(image.manifest.raw, f"manifest {image.manifest_descriptor.digest}")
    return {k: v for k, v in doc.items() if k not in ("config", "layers")}


# --- layers ----------------------------------------------------------------------------------

def layer_changes(a: list[Layer], b: list[Layer]) -> list[LayerChange]:
    """The layers that differ, in order (see the module's docstring)."""
    matcher = difflib.SequenceMatcher(None, [str(x.diff_id) for x in a], [str(x.diff_id) for x in b],
                                      autojunk=False)
    out: list[LayerChange] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += [LayerChange("recompressed", (i + 1, a[i]), (j + 1, b[j]))
                    for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
                    if a[i].descriptor.digest != b[j].descriptor.digest
                    or a[i].descriptor.media_type != b[j].descriptor.media_type]
            continue
        pairs = min(i2 - i1, j2 - j1)
        out += [LayerChange("changed", (i1 + k + 1, a[i1 + k]), (j1 + k + 1, b[j1 + k])) for k in range(pairs)]
        out += [LayerChange("removed", (i + 1, a[i]), None) for i in range(i1 + pairs, i2)]
        out += [LayerChange("added", None, (j + 1, b[j])) for j in range(j1 + pairs, j2)]
    return out


@dataclass(frozen=True)
class _Reader:
    """How the layers of one image are read: from the cache where they are, else from their origin."""

    origin: BlobOrigin
    cancel: Cancel
    name: str

    def files(self, side: tuple[int, Layer]) -> dict[str, Any]:
        position, layer = side
        return layer_files(layer, self.origin, f"{self.name} layer {position} ({layer.descriptor.digest})",
                           self.cancel)


def _compare_files(changes: list[LayerChange], readers: tuple[_Reader, _Reader], group: Group,
                   limit: int) -> None:
    """Each layer change's files: the two sides of a pair read at once, one change at a time (only
    one pair's listings are ever held)."""
    for change in changes:
        if not change.needs_files:
            continue
        a = group.submit(readers[0].files, change.a) if change.a is not None else None
        b = group.submit(readers[1].files, change.b) if change.b is not None else None
        old = group.wait_for(a) if a is not None else {}
        new = group.wait_for(b) if b is not None else {}
        change.files = compare(old, new, limit) if a is not None and b is not None else \
            listed(new if b is not None else old, "added" if b is not None else "removed", limit)


# --- the operation ---------------------------------------------------------------------------

def diff(options: DiffOptions, session: Session | None = None) -> DiffResult:
    """`registry-tools diff A B`."""
    o = options
    if o.platforms.wants_all():
        raise UsageError("diff compares one platform's images: name it with --platform")
    if o.max_files < 0:
        raise UsageError("--max-files must be 0 or more")
    sides = (endpoint.parse(o.a, "source"), endpoint.parse(o.b, "source"))
    choice = o.platforms.choice()
    with using(session) as s:
        return repairing(s.cache, lambda: _diff(sides, choice, o, s))


def _diff(sides: tuple[endpoint.Endpoint, endpoint.Endpoint], choice: Choice, o: DiffOptions,
          s: Session) -> DiffResult:
    with ExitStack() as stack:
        # A registry destination's need: the manifest and config, each layer left where it is.
        supplies = [stack.enter_context(e.image(s, choice, "none").open(Need.RELAY)) for e in sides]
        a, b = (supply.image() for supply in supplies)
        result = DiffResult(Side(sides[0].display(), a), Side(sides[1].display(), b),
                            key_changes(_manifest_doc(a), _manifest_doc(b)),
                            key_changes(a.config, b.config, skip=(("rootfs", "diff_ids"),)), [], o.files)
        if result.same:
            return result
        result.layers = layer_changes(a.layers, b.layers)
        if o.files:
            readers = [_Reader(Origins(s.cache, [([x.descriptor.digest for x in i.layers], supply.origin)]),
                               s.cancel, name) for i, supply, name in zip((a, b), supplies, "AB", strict=True)]
            _read_files(result, (readers[0], readers[1]), s, o.max_files)
        return result


def _read_files(result: DiffResult, readers: tuple[_Reader, _Reader], s: Session, limit: int) -> None:
    sizes = [side[1].descriptor.size for c in result.layers if c.needs_files for side in (c.a, c.b) if side]
    s.progress.start(sum(sizes), len(sizes))
    try:
        with s.workers.group(2) as group:
            _compare_files(result.layers, readers, group, limit)
    finally:
        s.progress.finish()
