"""diff: what changed between two images, as text or `--json`; the exit status says whether they differ."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Iterator

from registry_tools.cli.common import dump, session_of
from registry_tools.cli.options import add_common, add_platform, boolean
from registry_tools.errors import printable

if TYPE_CHECKING:
    from registry_tools.api.diff import DiffResult, KeyChange, LayerChange
    from registry_tools.formats.listing import FileChanges, FileEntry

MARKS = {"added": "+", "removed": "-", "changed": "~", "recompressed": "="}


def _diff(sub: Any) -> None:
    p = sub.add_parser(
        "diff", help="what changed between two images: config keys, layers, and the files in the layers",
        description="Compare image A with image B (each any source: a registry reference, oci:DIR[:TAG], "
                    "oci-archive:FILE[:TAG], docker-archive:FILE, or a path), for one platform, at three levels: "
                    "the manifest's and config's keys (old and new value; config.Env by name); the layers "
                    "(matched by diff_id in order, those between two matches paired by position: added, removed, "
                    "changed, or recompressed: the same tar stored as other bytes), each with its digest and size; "
                    "and the files in the layers that differ (added, removed, changed: type, size, mode, owner, "
                    "mtime, link target, content sha256), read as streams and never unpacked. Exit status: 0 when "
                    "the images are the same (one manifest digest), 1 when they differ, as diff(1) has it; a "
                    "failure is 1 too, with one line on stderr and nothing on stdout; bad usage is 2.")
    p.add_argument("a", metavar="A", help="the old image")
    p.add_argument("b", metavar="B", help="the new image")
    p.add_argument("--files", type=boolean, default=True, metavar="BOOL",
                   help="compare the files in the layers that differ (default true; false: the quick answer, "
                        "no layer is read)")
    p.add_argument("--max-files", type=int, default=1000, metavar="N",
                   help="list at most N file changes of each kind per layer (every one is counted; default 1000)")
    add_platform(p)
    add_common(p)


def cmd_diff(args: argparse.Namespace) -> int:
    from registry_tools.api.diff import DiffOptions, diff
    from registry_tools.api.options import Platforms

    platforms = Platforms(args.platform, args.os, args.arch, args.variant, args.allow_cross_arch)
    files = args.files and (args.json or not args.quiet)  # -q: the exit status alone, the quick answer
    with session_of(args) as session:
        r = diff(DiffOptions(args.a, args.b, platforms, files, args.max_files), session)
    if args.json:
        dump(r.to_json())
    elif not args.quiet:
        sys.stdout.write("".join(line + "\n" for line in report(r)))
    return 0 if r.same else 1


def report(r: DiffResult) -> Iterator[str]:
    """The text report: both images, then each level that differs, then one line of totals."""
    for name, side in (("A", r.a), ("B", r.b)):
        i = side.image
        yield printable(f"{name}  {side.endpoint}  manifest {i.manifest_descriptor.digest}  config "
                        f"{i.config_digest}  {i.chosen_platform}")
    if r.same:
        yield "the images are the same"
        return
    for title, keys in (("manifest", r.manifest), ("config", r.config)):
        if keys:
            yield title
            yield from (_key(k) for k in keys)
    if r.layers:
        yield "layers"
        for change in r.layers:
            yield from _layer(change)
    yield _totals(r)


def _value(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _key(k: KeyChange) -> str:
    if k.change == "added":
        what = _value(k.new)
    elif k.change == "removed":
        what = _value(k.old)
    else:
        what = f"{_value(k.old)} -> {_value(k.new)}"
    return printable(f"  {MARKS[k.change]} {k.key}  {what}")


def _short(digest: object) -> str:
    algo, _, hex_ = str(digest).partition(":")
    return f"{algo}:{hex_[:12]}"


def _layer(c: LayerChange) -> Iterator[str]:
    present = [s for s in (c.a, c.b) if s is not None]
    sides = [f"{_short(layer.descriptor.digest)} {layer.descriptor.size} B" for _, layer in present]
    where = " -> ".join(dict.fromkeys(str(position) for position, _ in present))  # `6`, or `2 -> 3`
    line = f"  {MARKS[c.change]} layer {where}  {' -> '.join(sides)}"
    if c.change == "recompressed":
        assert c.a is not None
        line += f"  (recompressed: the same tar, diff_id {_short(c.a[1].diff_id)})"
    yield line
    if c.files is not None:
        yield from _files(c.files)


def _files(f: FileChanges) -> Iterator[str]:
    rows = [(e.path, f"      + {_entry(e)}") for e in f.added] + \
           [(e.path, f"      - {_entry(e)}") for e in f.removed] + \
           [(b.path, f"      ~ {_changed(a, b)}") for a, b in f.changed]
    yield from (printable(line) for _, line in sorted(rows))
    more = {kind: n - len(getattr(f, kind)) for kind, n in f.counts.items() if n > len(getattr(f, kind))}
    if more:
        yield "      … and " + ", ".join(f"{n} more {kind}" for kind, n in more.items())


def _entry(e: FileEntry) -> str:
    text = f"{e.path}  {e.type}"
    if e.type == "file":
        text += f" {e.size} B {_short(e.sha256)}"
    text += f" {e.mode:04o} {e.uid}:{e.gid}"
    return text + (f" -> {e.link}" if e.link else "")


def _field(name: str, v: Any) -> str:
    if name == "mode":
        return f"{v:04o}"
    if name == "sha256":
        return str(v).partition(":")[2][:12] or "none"
    if name == "xattrs":
        return _value(dict(v))
    return str(v) if v != "" else "none"


def _changed(a: FileEntry, b: FileEntry) -> str:
    from registry_tools.formats.listing import changed_fields

    parts = [f"{n} {_field(n, getattr(a, n))} -> {_field(n, getattr(b, n))}" for n in changed_fields(a, b)]
    return f"{b.path}  {', '.join(parts)}"


def _totals(r: DiffResult) -> str:
    counts = [(len(r.manifest), "manifest key"), (len(r.config), "config key"), (len(r.layers), "layer")]
    if r.files:
        counts.append((sum(sum(c.files.counts.values()) for c in r.layers if c.files is not None), "file"))
    said = ", ".join(f"{n} {what}{'' if n == 1 else 's'}" for n, what in counts if n)
    return f"the images differ: {said or 'only in how their manifests are written'}"


COMMANDS = {"diff": (_diff, cmd_diff)}
