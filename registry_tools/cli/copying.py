"""The commands that move and manage images in registries: copy, sync, tags, tag, delete,
and prefetch's lock checks."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from registry_tools.cli.commands import lock_lines, note, session_of

if TYPE_CHECKING:
    from registry_tools.api.sync import SyncItem


def _dump(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def _report(args: argparse.Namespace, doc: object, summary: str, result: object) -> int:
    """`--json`: the document; else the summary on stderr (not with -q) and the result on stdout."""
    if args.json:
        _dump(doc)
    else:
        note(args, summary)
        print(result)
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    from registry_tools.api.copy import copy, parse_platforms

    with session_of(args) as session:
        r = copy(args.source, args.dest, platforms=parse_platforms(args.platform), tags=args.tag, session=session,
                 cross_arch=args.allow_cross_arch, referrers=args.referrers)
    if args.json:
        _dump(r.to_json())
        return 0
    p = r.pushed
    if not args.quiet:
        subset = f" (a new index of {', '.join(r.platforms)} from {r.source_digest})" \
            if r.source_digest and r.source_digest != r.digest else ""
        if r.up_to_date:
            print(f"{r.destination} is up to date{subset}", file=sys.stderr)
        elif p is not None:
            print(f"copied {r.source} to {r.destination}{subset}: {len(p.uploaded)} blob(s) sent "
                  f"({p.bytes_uploaded / 1e6:.1f} MB), {len(p.mounted)} mounted, {len(p.present)} already there, "
                  f"{p.manifests_put} manifest(s) written", file=sys.stderr)
        else:
            print(f"wrote {r.destination} ({', '.join([*r.platforms, f'manifest {r.digest}'])})", file=sys.stderr)
    if r.referrers and not args.quiet:
        print(f"with {len(r.referrers)} referrer(s) and signature(s)", file=sys.stderr)
    if r.source_digest and r.source_digest != r.digest and r.pushed is not None:
        print(f"source {r.source_digest}")
    print(r.digest)
    return 0


def _sync_image(item: SyncItem) -> dict[str, object]:
    """An image of `sync --json`: what is copied where (the `sync` schema's images)."""
    return {"source": f"{item.source.name}@{item.digest}", "destination": item.dest.name, "tags": item.tags}


def cmd_sync(args: argparse.Namespace) -> int:
    from registry_tools.api.lock import lock_text, read_lock, write_lock
    from registry_tools.api.sync import mirror_lock, plan, sync
    from registry_tools.progress import SyncProgress

    entries = read_lock(args.lock)
    items = plan(entries, args.to)
    new_lock = lock_text(mirror_lock(entries, args.to))
    if args.dry_run:
        if args.json:
            _dump({"dryRun": True, "images": [_sync_image(i) for i in items]})
            return 0
        for item in items:
            print(f"would copy {item.describe()}", file=sys.stderr)
        print(f"{len(items)} image(s) to check; nothing sent", file=sys.stderr)
        return 0
    progress = SyncProgress(len(items), quiet=args.quiet)
    keys = {id(item): i for i, item in enumerate(items)}

    def done(item) -> None:
        if item.error is not None:
            line = f"failed {item.describe()}: {item.error}"
        elif item.up_to_date:
            line = f"up to date {item.describe()}"
        else:
            p = item.pushed
            line = (f"mirrored {item.describe()}: {len(p.uploaded)} blob(s) sent ({p.bytes_uploaded / 1e6:.1f} MB), "
                    f"{len(p.mounted)} mounted, {len(p.present)} already there")
        progress.done(keys[id(item)], line)

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
        _dump({"images": [{**_sync_image(i), "upToDate": i.up_to_date, "error": str(i.error) if i.error else None,
                           "blobsUploaded": len(i.pushed.uploaded) if i.pushed else 0,
                           "bytesSent": i.pushed.bytes_uploaded if i.pushed else 0} for i in items]})
    if failed:
        print(f"registry-tools: {len(failed)} of {len(items)} image(s) failed; no lock written", file=sys.stderr)
        return max(item.error.exit_code for item in failed)  # type: ignore[union-attr]
    if args.output:
        write_lock(args.output, new_lock)
    elif not args.json:
        sys.stdout.write(new_lock)
    return 0


def cmd_prefetch_drift(args: argparse.Namespace) -> int:
    from registry_tools.api.drift import check, update
    from registry_tools.api.lock import lock_text, read_lock, write_lock

    lines, source = lock_lines(args)
    lock_path = args.check or args.update
    entries = read_lock(lock_path)
    with session_of(args) as session:
        drifts = check(lines, entries, session, jobs=args.jobs)
        if args.check:
            for d in drifts:
                print(f"{source}:{d.line.line}: {d.describe()}")
            if not drifts:
                print(f"{lock_path} is current: every tag resolves to the digest it pins", file=sys.stderr)
            return 1 if drifts else 0
        new_entries, failed = update(lines, entries, drifts, session, jobs=args.jobs, format=args.format)
    for line, err in failed:
        print(f"registry-tools: {source}:{line.line}: {line.reference}: {err}", file=sys.stderr)
    if failed:
        print(f"registry-tools: {len(failed)} image(s) failed; {lock_path} left as it was", file=sys.stderr)
        return max(e.exit_code for _, e in failed)
    for d in drifts:
        print(f"updated {source}:{d.line.line}: {d.describe()}", file=sys.stderr)
    write_lock(lock_path, lock_text(new_entries))
    if not drifts:
        print(f"{lock_path} is current; rewritten unchanged", file=sys.stderr)
    return 0


def cmd_tags(args: argparse.Namespace) -> int:
    from registry_tools.api.tags import list_tags

    with session_of(args) as session:
        tags = list_tags(args.image, session)
    if args.json:
        _dump(tags)
    else:
        for t in tags:
            print(t)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from registry_tools.api.tags import tag

    with session_of(args) as session:
        r = tag(args.image, args.new_tag, session)
    if args.json:
        _dump({"reference": r.reference, "digest": str(r.digest), "changed": r.changed})
        return 0
    if not args.quiet and not r.changed:
        print(f"{r.reference} already names {r.digest}; nothing written", file=sys.stderr)
    print(f"{r.reference}@{r.digest}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from registry_tools.api.tags import delete

    with session_of(args) as session:
        digest = delete(args.image, session)
    if args.json:
        _dump({"deleted": str(digest), "reference": args.image})
    elif not args.quiet:
        print(f"deleted {args.image}", file=sys.stderr)
    return 0


__all__ = ["cmd_copy", "cmd_delete", "cmd_prefetch_drift", "cmd_sync", "cmd_tag", "cmd_tags"]


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
    change = {"create": "", "add": "replaced", "remove": "removed"}[args.index_action]
    what = f"; {change} {', '.join(r.replaced)}" if r.replaced else ""
    return _report(args, r.to_json(), f"{r.target}: an index of {r.entries} entries ({', '.join(r.platforms)})"
                                      f"{what}; {r.copied} image(s) copied in", r.digest)


def cmd_attach(args: argparse.Namespace) -> int:
    from registry_tools.api.artifacts import attach
    from registry_tools.api.index import parse_annotations

    with session_of(args) as session:
        r = attach(args.image, args.artifact_type, args.files, annotations=parse_annotations(args.annotation),
                   session=session)
    return _report(args, r.to_json(), f"attached {r.files} file(s) to {r.subject} as {r.artifact_type}",
                   r.reference)


def cmd_referrers(args: argparse.Namespace) -> int:
    from registry_tools.api.artifacts import referrers
    from registry_tools.errors import printable

    with session_of(args) as session:
        r = referrers(args.image, artifact_type=args.artifact_type, session=session)
    if args.json:
        _dump({"subject": str(r.subject), "via": r.via, "referrers": [d.raw for d in r.descriptors]})
        return 0
    if not args.quiet:
        how = "the referrers API" if r.via == "api" else "the fallback tag"
        print(f"{len(r.descriptors)} referrer(s) of {r.subject} (from {how})", file=sys.stderr)
    for d in r.descriptors:
        kind = d.raw.get("artifactType") if isinstance(d.raw.get("artifactType"), str) else d.media_type
        print(f"{d.digest} {printable(str(kind))} {d.size}")
    return 0


def cmd_generate_key(args: argparse.Namespace) -> int:
    from registry_tools.api.sign import generate_key, passphrase

    key, pub = generate_key(args.prefix, passphrase(sys.stdin.isatty(), confirm=True), pkcs8=args.pkcs8)
    return _report(args, {"privateKey": str(key), "publicKey": str(pub)}, f"wrote {key} (mode 0600) and {pub}",
                   pub)


def cmd_sign(args: argparse.Namespace) -> int:
    from registry_tools.api.sign import passphrase, sign

    secret = passphrase(sys.stdin.isatty())
    with session_of(args) as session:
        r = sign(args.image, args.key, secret, session=session)
    return _report(args, r.to_json(), f"signed {r.reference}: {r.signatures} signature(s) in {r.signature_digest}",
                   r.signature_digest)


def cmd_verify(args: argparse.Namespace) -> int:
    from registry_tools.api.sign import verify

    with session_of(args) as session:
        r = verify(args.image, args.key, session=session)
    return _report(args, r.to_json(), f"{r.reference}: {r.verified} valid signature(s) by {args.key}",
                   r.digest)


def cmd_export(args: argparse.Namespace) -> int:
    from registry_tools.api.export import export

    with session_of(args) as session:
        r = export(args.source, args.output, platform=args.platform, session=session)
    return _report(args, r.to_json(),
                   f"wrote {r.output} ({r.entries} entries, {r.platform}, manifest {r.manifest_digest})",
                   r.to_json()["hash"])
