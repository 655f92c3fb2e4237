"""What a registry holds: inspect, digest, tags, referrers; and small writes: tag, delete, attach."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from registry_tools.cli.common import dump, emit, note, report, session_of
from registry_tools.cli.options import add_common, add_platform
from registry_tools.errors import UsageError
from registry_tools.words import count, size

if TYPE_CHECKING:
    from registry_tools.api.inspect import Resolved
    from registry_tools.model.digest import Digest


def _inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show what a reference points to (no layer is pulled)")
    p.add_argument("image", help="IMAGE[:TAG|@DIGEST]")
    p.add_argument("--raw", action="store_true", help="print the manifest bytes exactly as served")
    add_platform(p)
    add_common(p)


def cmd_inspect(args: argparse.Namespace) -> int:
    from registry_tools.api.inspect import platform_digest, resolve, summary

    wanted = _wanted(args)
    if args.raw and args.json:
        raise UsageError("--raw prints the manifest's own bytes; without it the output is JSON already")
    with session_of(args) as session:
        r = resolve(args.image, session)
        if args.raw:
            digest = platform_digest(r, wanted)
            raw = r.raw if digest == r.digest else session.source(r.ref).manifest_bytes(digest)[0]
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            note(args, f"{args.image}: manifest {digest}, {count(len(raw), 'byte')} as served")
            return 0
        info = summary(r, session, wanted)
    print(json.dumps(info, indent=2))
    note(args, _inspected(args.image, info))
    return 0


def _inspected(image: str, info: dict[str, Any]) -> str:
    """inspect's summary line: an index's platforms, or one image's platform, layers and size."""
    if "platform" not in info:
        return f"{image}: an index of {count(len(info['platforms']), 'platform')} ({', '.join(info['platforms'])})"
    return (f"{image}: a {info['platform']} image, {count(len(info['layers']), 'layer')}, "
            f"{size(info['size'])} compressed")


def _digest(sub: Any) -> None:
    p = sub.add_parser("digest", help="print the digest a reference resolves to")
    p.add_argument("image", help="IMAGE[:TAG|@DIGEST]")
    add_platform(p)
    add_common(p)


def cmd_digest(args: argparse.Namespace) -> int:
    from registry_tools.api.inspect import platform_digest, resolve

    with session_of(args) as session:
        r = resolve(args.image, session)
        digest = platform_digest(r, _wanted(args))
    if args.json:
        emit({"reference": args.image, "digest": str(digest)})
        return 0
    print(digest)
    note(args, _resolved(args.image, r, digest))
    return 0


def _resolved(image: str, r: Resolved, digest: Digest) -> str:
    """digest's summary line: what the reference names (and the platform's entry, if one was asked for)."""
    from registry_tools.model import manifest as mf
    from registry_tools.model.platform import offered_platforms

    if not isinstance(r.doc, mf.Index):
        return f"{image}: an image manifest"
    platforms = offered_platforms([d.raw for d in r.doc.manifests])
    if digest == r.digest:
        return f"{image}: an index of {count(len(platforms), 'platform')} ({', '.join(platforms)}); --platform " \
               "gives one's manifest"
    chosen = next(d for d in r.doc.manifests if d.digest == digest)
    which = offered_platforms([chosen.raw]) or ["chosen"]
    return f"{image}: the {which[0]} entry of index {r.digest}"


def _tags(sub: Any) -> None:
    p = sub.add_parser("tags", help="list a repository's tags (every page)", description="Bounded: past 100,000 "
                       "tags, 32 MiB, 10,000 pages or a page read twice, one line and exit 1. Non-tags: left out.")
    p.add_argument("image", metavar="REPOSITORY", help="the repository, e.g. ghcr.io/org/app")
    add_common(p)


def cmd_tags(args: argparse.Namespace) -> int:
    from registry_tools.api.tags import list_tags

    with session_of(args) as session:
        tags = list_tags(args.image, session)
    if args.json:
        dump(tags)
        return 0
    for t in tags:
        print(t)
    note(args, f"{count(len(tags), 'tag')} in {args.image}")
    return 0


def _tag(sub: Any) -> None:
    p = sub.add_parser("tag", help="point a new tag at a manifest (one manifest PUT)")
    p.add_argument("image", metavar="SRC@DIGEST", help="the manifest (REPOSITORY@DIGEST, or :TAG)")
    p.add_argument("new_tag", metavar="NEWTAG", help="the tag to set, in the same repository")
    add_common(p)


def cmd_tag(args: argparse.Namespace) -> int:
    from registry_tools.api.tags import tag

    with session_of(args) as session:
        r = tag(args.image, args.new_tag, session)
    if args.json:
        dump({"reference": r.reference, "digest": str(r.digest), "changed": r.changed})
        return 0
    print(f"{r.reference}@{r.digest}")
    note(args, f"{r.reference} now names {r.digest}" if r.changed else
         f"{r.reference} already names {r.digest}; nothing written")
    return 0


def _delete(sub: Any) -> None:
    p = sub.add_parser("delete", help="delete a manifest by digest, where the registry allows it")
    p.add_argument("image", metavar="REF@DIGEST", help="the manifest to delete, by digest (a tag is refused)")
    add_common(p)


def cmd_delete(args: argparse.Namespace) -> int:
    from registry_tools.api.tags import delete

    with session_of(args) as session:
        digest = delete(args.image, session)
    if args.json:
        dump({"deleted": str(digest), "reference": args.image})
    elif not args.quiet:
        print(f"deleted {args.image}", file=sys.stderr)
    return 0


def _attach(sub: Any) -> None:
    p = sub.add_parser(
        "attach", help="attach files to an image as an OCI 1.1 artifact (signatures, SBOMs, reports)",
        description="Push an artifact manifest whose subject is the manifest REF names: artifactType T, the "
                    "empty config, one layer per FILE (titled with its name). Where the registry has no "
                    "referrers API, the artifact is added to the subject's fallback index (tag sha256-<hex>).")
    p.add_argument("image", metavar="REF", help="the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
    p.add_argument("files", nargs="+", metavar="FILE[:MEDIATYPE]",
                   help="a file to attach (media type default application/octet-stream)")
    p.add_argument("--artifact-type", required=True, metavar="T", help="the artifact's type, e.g. "
                   "application/spdx+json")
    p.add_argument("--annotation", action="append", metavar="KEY=VALUE", help="an annotation on the artifact")
    add_common(p)


def cmd_attach(args: argparse.Namespace) -> int:
    from registry_tools.api.artifacts import attach
    from registry_tools.api.index import parse_annotations

    with session_of(args) as session:
        r = attach(args.image, args.artifact_type, args.files, annotations=parse_annotations(args.annotation),
                   session=session)
    return report(args, r.to_json(), f"attached {count(r.files, 'file')} to {r.subject} as {r.artifact_type}",
                   r.reference)


def _referrers(sub: Any) -> None:
    p = sub.add_parser("referrers", help="list what refers to an image (signatures, SBOMs, attestations)",
                       description="List the manifests whose subject is the manifest REF names: from the "
                                   "registry's referrers API, else from the fallback tag sha256-<hex> (each entry "
                                   "checked: its own manifest must name that subject).")
    p.add_argument("image", metavar="REF", help="the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
    p.add_argument("--artifact-type", metavar="T", help="only artifacts of this type")
    add_common(p)


def cmd_referrers(args: argparse.Namespace) -> int:
    from registry_tools.api.artifacts import referrers
    from registry_tools.errors import printable

    with session_of(args) as session:
        r = referrers(args.image, artifact_type=args.artifact_type, session=session)
    if args.json:
        dump({"subject": str(r.subject), "via": r.via, "referrers": [d.raw for d in r.descriptors]})
        return 0
    if not args.quiet:
        how = "the referrers API" if r.via == "api" else "the fallback tag"
        print(f"{count(len(r.descriptors), 'referrer')} of {r.subject} (from {how})", file=sys.stderr)
    for d in r.descriptors:
        kind = d.raw.get("artifactType") if isinstance(d.raw.get("artifactType"), str) else d.media_type
        print(f"{d.digest} {printable(str(kind))} {d.size}")
    return 0


def _wanted(args: argparse.Namespace):
    if not (args.platform or args.os or args.arch or args.variant):
        return None
    from registry_tools.model.platform import requested

    return requested(args.platform, args.os, args.arch, args.variant)


COMMANDS = {
    "inspect": (_inspect, cmd_inspect),
    "digest": (_digest, cmd_digest),
    "tags": (_tags, cmd_tags),
    "tag": (_tag, cmd_tag),
    "delete": (_delete, cmd_delete),
    "attach": (_attach, cmd_attach),
    "referrers": (_referrers, cmd_referrers),
}
