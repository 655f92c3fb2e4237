"""index: make and edit multi-platform indexes in a registry or a layout."""
from __future__ import annotations

import argparse
from typing import Any

from registry_tools.cli.common import report, session_of
from registry_tools.cli.options import Parser, add_common, complete_platforms
from registry_tools.words import count


def _index(sub: Any) -> None:
    p = sub.add_parser(
        "index", help="make an index of images, or add or remove platforms (in a registry or a layout)",
        description="Assemble a multi-arch index without a daemon. Each action writes a new index (entries sorted "
                    "by platform; nested indexes and attestations carried over unchanged), points the tag at it "
                    "and prints its digest. An index lives at REGISTRY/REPOSITORY[:TAG] or oci:DIR[:TAG] (default "
                    "tag latest); images from elsewhere are copied in by digest first.")
    actions = p.add_subparsers(dest="index_action", required=True, parser_class=Parser, metavar="ACTION")
    c = actions.add_parser("create", help="a new index of these images (platforms read from each config)")
    c.add_argument("dest", metavar="DEST", help="REGISTRY/REPOSITORY[:TAG] or oci:DIR[:TAG]")
    c.add_argument("images", nargs="+", metavar="REF@DIGEST", help="the images to list, each pinned by digest "
                   "(REF:TAG: the digest the tag names now, which the summary shows)")
    a = actions.add_parser("add", help="put images into an existing index (replacing the entry of the same "
                                       "platform, if there is one)")
    a.add_argument("target", metavar="INDEX", help="REGISTRY/REPOSITORY[:TAG] or oci:DIR[:TAG]")
    a.add_argument("images", nargs="+", metavar="REF@DIGEST", help="the images to put in, each pinned by digest "
                   "(REF:TAG: the digest the tag names now, which the summary shows)")
    for q in (c, a):
        q.add_argument("--annotation", action="append", metavar="KEY=VALUE",
                       help="an annotation on the index (repeatable); nothing is filled from the clock")
    r = actions.add_parser("remove", help="take platforms out of an existing index")
    r.add_argument("target", metavar="INDEX", help="REGISTRY/REPOSITORY[:TAG] or oci:DIR[:TAG]")
    complete_platforms(r.add_argument("--platform", action="append", required=True, metavar="OS/ARCH[/VARIANT]",
                                       help="a platform to remove (repeatable or comma-separated)"))
    for q in (c, a, r):
        q.formatter_class = argparse.RawDescriptionHelpFormatter
        add_common(q)


def cmd_index(args: argparse.Namespace) -> int:
    from registry_tools.api import index
    from registry_tools.api.copy import parse_platforms

    with session_of(args) as session:
        if args.index_action == "create":
            r = index.create(args.dest, args.images, annotations=index.parse_annotations(args.annotation),
                             session=session)
        elif args.index_action == "add":
            r = index.add(args.target, args.images, annotations=index.parse_annotations(args.annotation),
                          session=session)
        else:
            r = index.remove(args.target, parse_platforms(args.platform), session=session)
    change = "removed" if args.index_action == "remove" else "replaced"
    # the platforms taken out are `removed`; those whose entries others took the place of, `replaced`
    doc = {(change if key == "replaced" else key): value for key, value in r.to_json().items()}
    return report(args, doc, summary(change, r), r.digest)


def summary(change: str, r: Any) -> str:
    """`reg/app:1: an index of 2 entries (linux/amd64, linux/arm64); 1 image copied in`, with the
    platforms replaced or removed, and the digest each member named by a tag was taken at."""
    parts = [f"{r.target}: an index of {count(r.entries, 'entry')} ({', '.join(r.platforms + r.others)})"]
    if r.replaced:
        parts.append(f"{change} {', '.join(r.replaced)}")
    if change == "replaced":  # create and add copy images in; remove never does
        parts.append(f"{count(r.copied, 'image')} copied in")
    parts += [f"{text} taken as {digest} (an index names its images by digest: it will not follow the tag)"
              for text, digest in r.resolved]
    return "; ".join(parts)


COMMANDS = {"index": (_index, cmd_index)}
