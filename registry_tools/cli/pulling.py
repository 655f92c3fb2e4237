"""pull, prefetch (with lock files and their checks) and export: images out of registries."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from registry_tools.cli.common import emit, lock_lines, note, report, session_of
from registry_tools.cli.options import add_common, add_platform, complete_platforms
from registry_tools.errors import UsageError
from registry_tools.formats import FORMATS


def _pull(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image pinned by digest into an archive or layout")
    p.add_argument("image", help="IMAGE or IMAGE@sha256:…")
    p.add_argument("--digest", help="the image digest (index or manifest) to pull")
    p.add_argument("--hash", help="expected sha256 of the output (SRI, hex or Nix base32)")
    p.add_argument("--sha256", dest="hash", help=argparse.SUPPRESS)
    p.add_argument("--final-image-name", help="name to record in the archive (default: IMAGE's name)")
    p.add_argument("--final-image-tag", default="latest", help="tag to record in the archive (default latest)")
    p.add_argument("--format", default="docker-archive", choices=FORMATS)
    p.add_argument("-o", "--output", required=True, help="where to write the archive or layout")
    p.add_argument("--all", action="store_true", dest="all_platforms",
                   help="the whole index: every platform (same as --platform all; --format oci or oci-archive)")
    p.add_argument("--verify-key", metavar="KEY.pub",
                   help="write nothing unless the image (the digest pinned) has a valid cosign signature by this "
                        "public key")
    add_platform(p)
    add_common(p)


def cmd_pull(args: argparse.Namespace) -> int:
    from registry_tools.api.pull import PullOptions, pull_image

    with session_of(args) as session:
        result = pull_image(PullOptions(
            args.image, args.output, digest=args.digest, format=args.format, platform=args.platform,
            os=args.os, arch=args.arch, variant=args.variant, final_image_name=args.final_image_name,
            final_image_tag=args.final_image_tag, hash=args.hash, cross_arch=args.allow_cross_arch,
            all_platforms=args.all_platforms, verify_key=args.verify_key), session)
    platform = "all" if result.all_platforms else str(result.platform)
    if args.json:
        doc: dict = {"output": str(result.output), "format": result.format, "imageName": result.image_name,
               "imageDigest": str(result.image_digest), "manifestDigest": str(result.manifest_digest),
               "platform": platform, "finalImageName": result.final_image_name,
               "finalImageTag": result.final_image_tag, "hash": result.hash_sri}
        if result.all_platforms:
            doc["platforms"] = list(result.platforms)
        emit(doc)
        return 0
    what = f"every platform: {', '.join(result.platforms)}; index" if result.all_platforms else \
        f"{result.platform}, manifest"
    note(args, f"wrote {result.output} ({result.format}, {what} {result.manifest_digest})")
    print(result.hash_sri)
    return 0


def _export(sub: Any) -> None:
    p = sub.add_parser("export", help="an image's root filesystem as one tar (exportImage, podman export)",
                       description="Apply SOURCE's layers in order (whiteouts and opaque directories honoured) and "
                                   "write the root filesystem as one tar; its sha256 is printed, as pull's is. "
                                   "SOURCE: a registry reference pinned by digest, docker-archive:FILE, "
                                   "oci-archive:FILE, oci:DIR[:TAG] or an existing path.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the tar to write")
    complete_platforms(p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                       help="the platform to take from an index (default: this machine's)"))
    add_common(p)


def cmd_export(args: argparse.Namespace) -> int:
    from registry_tools.api.export import export

    with session_of(args) as session:
        r = export(args.source, args.output, args.platform, session)
    return report(args, r.to_json(),
                   f"wrote {r.output} ({r.entries} entries, {r.platform}, manifest {r.manifest_digest})",
                   r.to_json()["hash"])


def _prefetch(sub: Any) -> None:
    p = sub.add_parser("prefetch", help="resolve a tag, pull, and print the pin (Nix or JSON)",
                       description="Resolve IMAGE's tag, pull it as `pull` would, and print what "
                                   "`pull` needs to reproduce it.")
    p.add_argument("image", nargs="?", help="IMAGE, IMAGE:TAG or IMAGE@DIGEST")
    p.add_argument("tag_or_digest", nargs="?", metavar="TAG|DIGEST", help="tag or digest (default: latest)")
    p.add_argument("--image-name", help="same as IMAGE")
    p.add_argument("--image-tag", help="same as TAG")
    p.add_argument("--image-digest", help="same as DIGEST")
    p.add_argument("--final-image-name", help="name recorded in the archive (default: IMAGE as typed)")
    p.add_argument("--final-image-tag", help="tag recorded in the archive (default: TAG, or latest)")
    p.add_argument("--format", default="docker-archive", choices=FORMATS)
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="pin every image listed in FILE (one 'IMAGE [PLATFORM]' a line; - for stdin)")
    drift = p.add_mutually_exclusive_group()
    drift.add_argument("--check", metavar="LOCK", help="with --from: print each tag that now resolves to another "
                       "digest than the JSON lock LOCK pins, and exit 1 if any does (nothing is pulled)")
    drift.add_argument("--update", metavar="LOCK", help="with --from: pin again only the tags that moved (and "
                       "lines LOCK lacks) and rewrite LOCK in place")
    p.add_argument("--all", action="store_true", dest="all_platforms",
                   help="pin the whole index as `pull --all` writes it (same as --platform all; --format oci or "
                        "oci-archive)")
    add_platform(p)
    add_common(p)


def cmd_prefetch(args: argparse.Namespace) -> int:
    from registry_tools.api.prefetch import PrefetchOptions, dumps, prefetch

    if args.check or args.update:
        return cmd_prefetch_drift(args)
    if args.from_file:
        return _prefetch_lock(args)
    image = args.image or args.image_name
    if not image:
        raise UsageError("name an image: registry-tools prefetch IMAGE [TAG|DIGEST] (or --image-name)")
    if args.image and args.image_name and args.image != args.image_name:
        raise UsageError("give the image once: positionally or with --image-name")
    extra = [x for x in (args.tag_or_digest, args.image_tag, args.image_digest) if x]
    if len(extra) > 1:
        raise UsageError("give one of TAG|DIGEST, --image-tag or --image-digest")
    with session_of(args) as session:
        pin = prefetch(PrefetchOptions(
            image, extra[0] if extra else None, platform=args.platform, os=args.os, arch=args.arch,
            variant=args.variant, final_image_name=args.final_image_name, final_image_tag=args.final_image_tag,
            format=args.format, cross_arch=args.allow_cross_arch, all_platforms=args.all_platforms), session)
    print(dumps(pin.to_dict()) if args.json else pin.to_nix(), end="" if args.json else "\n")
    return 0


def _prefetch_lock(args: argparse.Namespace) -> int:
    from registry_tools.api.prefetch import Pin, dumps, lock_document, lock_nix, prefetch_many

    lines, source = lock_lines(args)
    with session_of(args) as session:
        results = prefetch_many(lines, session=session, jobs=args.jobs, format=args.format)
    failed = [(item, r) for item, r in results if not isinstance(r, Pin)]
    for item, err in failed:
        print(f"registry-tools: {source}:{item.line}: {item.reference}: {err}", file=sys.stderr)
    if failed:
        print(f"registry-tools: {len(failed)} of {len(results)} image(s) failed; nothing printed", file=sys.stderr)
        return max(e.exit_code for _, e in failed)  # type: ignore[union-attr]
    print(dumps(lock_document(results)) if args.json else lock_nix(results), end="" if args.json else "\n")
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


COMMANDS = {
    "pull": (_pull, cmd_pull),
    "export": (_export, cmd_export),
    "prefetch": (_prefetch, cmd_prefetch),
}
