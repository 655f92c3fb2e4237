"""copy, sync and push: images between registries, archives and layouts."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry_tools.cli.common import dump, report_push, sent, session_of
from registry_tools.cli.options import add_common, add_podman, complete_platforms
from registry_tools.errors import UsageError
from registry_tools.words import count

if TYPE_CHECKING:
    from registry_tools.api.shards import Shard
    from registry_tools.api.sync import SyncItem


def _copy(sub: Any) -> None:
    p = sub.add_parser(
        "copy", help="copy an image between registries, archives and layouts (whole indexes)",
        description="Copy SRC to DEST. Each is a registry reference (docker://REF or REF; a DEST must name "
                    "its registry), or oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], "
                    "or an existing path; a DEST may be podman:NAME[:TAG] (loaded into podman's storage). "
                    "Between registries the whole index is copied, its digest kept; "
                    "blobs go straight from one registry to the other, unchanged and verified. The tag at "
                    "DEST: DEST's own, else SRC's, else none (by digest only), plus every --tag.")
    p.add_argument("source", metavar="SRC", help="the image to copy (see above for the forms)")
    p.add_argument("dest", metavar="DEST", help="where to copy it to (see above for the forms)")
    complete_platforms(p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT],...",
                   help="copy only these platforms of an index, as a new index of exactly them (repeatable "
                        "or comma-separated); to a file: the one platform to write"))
    p.add_argument("--all", action="store_true", help="copy every platform of an index (the default)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="one more tag at DEST (repeatable)")
    p.add_argument("--src-creds", metavar="USER:PASSWORD", help="credentials for SRC's repository (skopeo's flag)")
    p.add_argument("--dest-creds", metavar="USER:PASSWORD",
                   help="credentials for DEST's repository (skopeo's flag); with these, --creds is refused")
    p.add_argument("--referrers", action="store_true",
                   help="between registries: also copy everything that refers to the image (signatures, SBOMs, "
                        "attestations; recursively) and cosign's sha256-<hex>.sig/.att/.sbom tags")
    p.add_argument("--allow-cross-arch", action="store_true", help=argparse.SUPPRESS)
    add_podman(p)
    add_common(p)


def cmd_copy(args: argparse.Namespace) -> int:
    from registry_tools.api.copy import CopyOptions, copy, parse_platforms

    with session_of(args) as session:
        r = copy(CopyOptions(args.source, args.dest, parse_platforms(args.platform), args.all, args.tag,
                             cross_arch=args.allow_cross_arch, referrers=args.referrers,
                             podman_args=args.podman_arg), session)
    if args.json:
        dump(r.to_json())
        return 0
    p = r.pushed
    if not args.quiet:
        subset = f" (a new index of {', '.join(r.platforms)} from {r.source_digest})" \
            if r.source_digest and r.source_digest != r.digest else ""
        if r.up_to_date:
            held = subset or (f" ({', '.join(r.platforms)})" if r.platforms else "")
            print(f"{r.destination} is up to date{held}", file=sys.stderr)
        elif p is not None:
            print(f"copied {r.source} to {r.destination}{subset}: {sent(p)}", file=sys.stderr)
        elif r.loaded is not None:
            what = ", ".join([*r.platforms, f"manifest {r.digest}"])
            print(f"loaded {r.source} into podman as {r.loaded} ({what})", file=sys.stderr)
        else:
            print(f"wrote {r.destination} ({', '.join([*r.platforms, f'manifest {r.digest}'])})", file=sys.stderr)
    if r.referrers and not args.quiet:
        copied = count(len(r.referrers), "referrer or signature", "referrers and signatures")
        print(f"with {copied}", file=sys.stderr)
    if r.source_digest and r.source_digest != r.digest and r.pushed is not None:
        print(f"source {r.source_digest}")
    print(r.digest)
    return 0


def _sync(sub: Any) -> None:
    p = sub.add_parser(
        "sync", help="mirror every image a lock pins to another registry, and write the mirror's lock",
        description="Copy exactly the digests LOCK pins (whole indexes) to DEST, REGISTRY[/PREFIX], keeping each "
                    "repository path under it (docker.io/library/alpine -> REGISTRY/PREFIX/library/alpine), "
                    "tagged as each entry's reference. The mirror's lock (the same pins, imageName changed; "
                    "every hash stays valid) goes to stdout or -o. An image already mirrored costs one HEAD. "
                    "With --shard I/N, only the entries of shard I (from 0) of N, chosen by each entry's name and "
                    "digest; `lock merge` joins the shards' mirror locks.")
    p.add_argument("lock", metavar="LOCK", help="a JSON lock (prefetch --from FILE --json)")
    p.add_argument("dest", metavar="DEST", nargs="?", help="where to mirror to: REGISTRY[/PREFIX] (or --to)")
    p.add_argument("--to", metavar="REGISTRY[/PREFIX]", help="the same as DEST")
    p.add_argument("-o", "--output", metavar="FILE", help="write the mirror's lock here (default: stdout)")
    p.add_argument("--shard", metavar="I/N|auto[/N]",
                   help="mirror only shard I (0 to N-1) of N; auto: I from REGISTRY_TOOLS_SHARD or "
                        "JOB_COMPLETION_INDEX (a Kubernetes indexed Job) and N from REGISTRY_TOOLS_SHARDS, or "
                        "GitLab's CI_NODE_INDEX and CI_NODE_TOTAL")
    p.add_argument("--dry-run", action="store_true", help="print the plan; send nothing")
    p.add_argument("--keep-going", action="store_true",
                   help="on a failure, go on with the other images, then report every failure (exit non-zero)")
    add_common(p)


def _sync_plan(args: argparse.Namespace) -> tuple[list[SyncItem], str, Shard | None]:
    """The images to copy, the mirror lock to write, and the shard (None: the whole lock)."""
    from registry_tools.api.lock import lock_text, read_lock
    from registry_tools.api.shards import parse_shard, shard_lock
    from registry_tools.api.sync import mirror_lock, plan

    if args.dest and args.to and args.dest != args.to:
        raise UsageError("give the mirror as DEST or as --to, not both")
    to = args.dest or args.to
    if not to:
        raise UsageError("name the mirror: registry-tools sync LOCK REGISTRY[/PREFIX]")
    entries = read_lock(args.lock)
    items = plan(entries, to)  # the whole lock is checked, whichever shard runs
    mirrored = mirror_lock(entries, to)
    if args.shard is None:
        return items, lock_text(mirrored), None
    shard = parse_shard(args.shard, os.environ)
    return ([item for item in items if shard.holds(item.entries[0])],
            shard_lock(entries, mirrored, shard, Path(args.lock)), shard)


def cmd_sync(args: argparse.Namespace) -> int:
    from registry_tools.api.lock import write_lock
    from registry_tools.api.sync import sync
    from registry_tools.progress import SyncProgress

    items, new_lock, shard = _sync_plan(args)
    part = {"shard": shard.to_json()} if shard else {}
    if args.dry_run:
        if args.json:
            dump({"dryRun": True, **part, "images": [_sync_image(i) for i in items]})
            return 0
        for item in items:
            print(f"would copy {item.describe()}", file=sys.stderr)
        print(f"{count(len(items), 'image')} to check{f' (shard {shard})' if shard else ''}; nothing sent",
              file=sys.stderr)
        return 0
    progress = SyncProgress(len(items), quiet=args.quiet)
    keys = {id(item): i for i, item in enumerate(items)}

    def done(item) -> None:
        progress.done(keys[id(item)], _sync_line(item))

    try:
        with session_of(args) as session:
            sync(items, session, jobs=args.jobs, keep_going=args.keep_going, done=done,
                 progress_of=lambda item: progress.image(keys[id(item)], item.dest.name))
    finally:
        progress.close()
    failed = [item for item in items if item.error is not None]
    for item in failed:
        lines = ", ".join(str(e.line) for e in item.entries)
        print(f"registry-tools: {args.lock}:{lines}: {item.describe()}: {item.error}", file=sys.stderr)
    if args.json:
        dump({**part, "images": [{**_sync_image(i), "upToDate": i.up_to_date,
                                  "error": str(i.error) if i.error else None,
                                  "blobsUploaded": len(i.pushed.uploaded) if i.pushed else 0,
                                  "bytesSent": i.pushed.bytes_uploaded if i.pushed else 0} for i in items]})
    if failed:
        print(f"registry-tools: {len(failed)} of {count(len(items), 'image')} failed; no lock written",
              file=sys.stderr)
        return max(item.error.exit_code for item in failed)  # type: ignore[union-attr]
    if args.output:
        write_lock(args.output, new_lock)
    elif not args.json:
        sys.stdout.write(new_lock)
    return 0


def _sync_line(item: SyncItem) -> str:
    """The line sync prints when an image is done."""
    if item.error is not None:
        return f"failed {item.describe()}: {item.error}"
    if item.up_to_date:
        return f"up to date {item.describe()}"
    p = item.pushed
    assert p is not None
    return f"mirrored {item.describe()}: {sent(p)}"


def _push(sub: Any) -> None:
    p = sub.add_parser("push", help="push a docker-archive, oci-archive or OCI layout to a registry")
    p.add_argument("source", help="an OCI layout directory (DIR or DIR:TAG), an oci-archive or a docker-archive")
    p.add_argument("dest", help="REGISTRY/REPOSITORY[:TAG]")
    p.add_argument("--annotation", action="append", metavar="KEY=VALUE",
                   help="an annotation on the manifest (or index) pushed, which makes it a new one (repeatable; "
                        "OCI manifests only; nothing is filled from the clock)")
    add_common(p)


def cmd_push(args: argparse.Namespace) -> int:
    from registry_tools.api.index import parse_annotations
    from registry_tools.api.push import push

    annotations = parse_annotations(args.annotation)
    with session_of(args) as session:
        result = push(args.source, args.dest, session, annotations)
    report_push(args, result)
    return 0


def _sync_image(item: SyncItem) -> dict[str, object]:
    """An image of `sync --json`: what is copied where (the `sync` schema's images)."""
    return {"source": f"{item.source.name}@{item.digest}", "destination": item.dest.name, "tags": item.tags}


COMMANDS = {"copy": (_copy, cmd_copy), "sync": (_sync, cmd_sync), "push": (_push, cmd_push)}
