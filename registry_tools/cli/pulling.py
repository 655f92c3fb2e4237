"""pull, prefetch (with lock files and their checks), assemble, fetch-blob and export: images out
of registries."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from registry_tools.cli.common import emit, lock_lines, note, report, session_of
from registry_tools.cli.options import add_common, add_platform, complete_platforms
from registry_tools.errors import UsageError
from registry_tools.formats import FORMATS
from registry_tools.words import count

if TYPE_CHECKING:
    from registry_tools.api.drift import Drift, Update
    from registry_tools.api.prefetch import AnyPin
    from registry_tools.api.pull import PullResult


def _pull(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image pinned by digest into an archive or layout",
                       description="Write the image IMAGE@DIGEST pins to OUTPUT, every manifest, blob and layer\n"
                                   "verified, and print the output's sha256.\n\n"
                                   "Manifests and blobs come from the cache first: a pull whose blobs are all\n"
                                   "cached contacts no registry (the content is verified by its digests, as Nix\n"
                                   "trusts a store path by its hash), so it succeeds though the repository is\n"
                                   "gone, the registry is down or the credentials are wrong. --check-registry\n"
                                   "asks the registry first.")
    p.add_argument("image", nargs="?", help="IMAGE or IMAGE@sha256:… (or --pin)")
    p.add_argument("--pin", metavar="PIN", help="pull what a pin file names (`prefetch --json`, either kind; - for "
                   "stdin): the same as `assemble PIN`")
    p.add_argument("--digest", help="the image digest (index or manifest) to pull")
    p.add_argument("--hash", help="expected sha256 of the output (SRI, hex or Nix base32)")
    p.add_argument("--sha256", dest="hash", help=argparse.SUPPRESS)
    p.add_argument("--final-image-name", help="name to record in the archive (default: IMAGE's name)")
    p.add_argument("--final-image-tag", help="tag to record in the archive (default latest)")
    p.add_argument("--format", choices=FORMATS, help="default docker-archive (with --pin: the pin's)")
    p.add_argument("-o", "--output", required=True, help="where to write the archive or layout")
    p.add_argument("--all", action="store_true", dest="all_platforms",
                   help="the whole index: every platform (same as --platform all; --format oci or oci-archive)")
    p.add_argument("--verify-key", metavar="KEY.pub",
                   help="write nothing unless the image (the digest pinned) has a valid cosign signature by this "
                        "public key")
    _check_registry(p)
    add_platform(p, whole=True)
    add_common(p)


def _check_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check-registry", action="store_true",
                   help="first confirm, by one HEAD of the manifest by digest, that the registry still serves it "
                        "(a missing repository, a registry down or refused credentials: one line, exit 1)")


def cmd_pull(args: argparse.Namespace) -> int:
    from registry_tools.api.pull import PullOptions, pull_image

    if args.pin:
        given = [args.image, args.digest, args.hash, args.final_image_name, args.final_image_tag, args.platform,
                 args.os, args.arch, args.variant, args.all_platforms or None, args.verify_key]
        if any(x is not None for x in given):
            raise UsageError("--pin gives the image, its digest, platform, names and hash: give only -o and --format")
        return _write_pin(args, args.pin)
    if not args.image:
        raise UsageError("name the image: registry-tools pull IMAGE@sha256:… -o OUT (or --pin PIN)")
    with session_of(args) as session:
        result = pull_image(PullOptions(
            args.image, args.output, digest=args.digest, format=args.format or "docker-archive",
            platform=args.platform, os=args.os, arch=args.arch, variant=args.variant,
            final_image_name=args.final_image_name, final_image_tag=args.final_image_tag or "latest",
            hash=args.hash, cross_arch=args.allow_cross_arch, all_platforms=args.all_platforms,
            verify_key=args.verify_key, check_registry=args.check_registry), session)
    return _report_pull(args, result)


def _report_pull(args: argparse.Namespace, result: PullResult) -> int:
    """What pull and assemble print: the hash of what was written (or --json's document)."""
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
    p.add_argument("source", metavar="SOURCE", help="the image whose root filesystem to write (see above)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the tar to write")
    complete_platforms(p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                       help="the platform to take from an index (default: this machine's)"))
    add_common(p)


def cmd_export(args: argparse.Namespace) -> int:
    from registry_tools.api.export import export

    with session_of(args) as session:
        r = export(args.source, args.output, args.platform, session)
    return report(args, r.to_json(),
                   f"wrote {r.output} ({count(r.entries, 'entry')}, {r.platform}, manifest {r.manifest_digest})",
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
    p.add_argument("--format", default="docker-archive", choices=FORMATS,
                   help="the output format to pin, as pull writes it (default docker-archive)")
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
    p.add_argument("--layers", action="store_true",
                   help="a layer pin: every manifest, config and layer by its digest instead of the output's hash "
                        "(reads the tag, the index, the manifest and the config; no layer is downloaded); "
                        "`assemble` writes from it what `pull` writes")
    add_platform(p, whole=True)
    add_common(p)


def cmd_prefetch(args: argparse.Namespace) -> int:
    from registry_tools.api.prefetch import PrefetchOptions, dumps, prefetch, prefetch_layers

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
        pin = (prefetch_layers if args.layers else prefetch)(PrefetchOptions(
            image, extra[0] if extra else None, platform=args.platform, os=args.os, arch=args.arch,
            variant=args.variant, final_image_name=args.final_image_name, final_image_tag=args.final_image_tag,
            format=args.format, cross_arch=args.allow_cross_arch, all_platforms=args.all_platforms), session)
    print(dumps(pin.to_dict()) if args.json else pin.to_nix(), end="" if args.json else "\n")
    note(args, _pinned(pin))
    return 0


def _pinned(pin: AnyPin) -> str:
    """prefetch's summary line: what was pinned, for which platform, and how."""
    from registry_tools.model.pin import LayerPin

    platform = "every platform" if pin.all_platforms else "/".join(p for p in (pin.os, pin.arch, pin.variant) if p)
    how = "a layer pin: no layer downloaded" if isinstance(pin, LayerPin) else f"the hash of its {pin.format}"
    return f"pinned {pin.image_name}@{pin.image_digest} ({platform}; {how})"


def _prefetch_lock(args: argparse.Namespace) -> int:
    from registry_tools.api.prefetch import dumps, lock_document, lock_nix, prefetch_many
    from registry_tools.errors import RegistryToolsError

    lines, source = lock_lines(args)
    with session_of(args) as session:
        results = prefetch_many(lines, session=session, jobs=args.jobs, format=args.format, layers=args.layers)
    failed = [(item, r) for item, r in results if isinstance(r, RegistryToolsError)]
    for item, err in failed:
        print(f"registry-tools: {source}:{item.line}: {item.reference}: {err}", file=sys.stderr)
    if failed:
        print(f"registry-tools: {len(failed)} of {count(len(results), 'image')} failed; nothing printed",
              file=sys.stderr)
        return max(e.exit_code for _, e in failed)  # type: ignore[union-attr]
    print(dumps(lock_document(results)) if args.json else lock_nix(results), end="" if args.json else "\n")
    note(args, f"pinned {count(len(results), 'image')} from {source}")
    return 0


def cmd_prefetch_drift(args: argparse.Namespace) -> int:
    from registry_tools.api.drift import NewPins, check, update
    from registry_tools.api.lock import lock_text, read_lock, write_lock

    lines, source = lock_lines(args)
    lock_path = args.check or args.update
    entries = read_lock(lock_path)
    with session_of(args) as session:
        drifts = check(lines, entries, session, jobs=args.jobs)
        if args.check:
            return _report_drift(args, source, drifts)
        done = update(lines, entries, drifts, session, args.jobs, NewPins(args.format, args.layers))
    for line, err in done.failed:
        print(f"registry-tools: {source}:{line.line}: {line.reference}: {err}", file=sys.stderr)
    if done.failed:
        print(f"registry-tools: {count(len(done.failed), 'image')} failed; {lock_path} left as it was",
              file=sys.stderr)
        return max(e.exit_code for _, e in done.failed)
    write_lock(lock_path, lock_text(done.entries))
    _report_update(args, source, done)
    return 0


def _report_update(args: argparse.Namespace, source: str, done: Update) -> None:
    """prefetch --update: each line pinned again and how (a full pin had to be pulled), as lines or as
    one document."""
    from registry_tools.model.pin import LayerPin

    if args.json:
        emit({"lock": args.update, "from": source, "updated": [
            {"line": line.line, "reference": line.reference, "platform": line.platform,
             "imageDigest": str(pin.image_digest), "layers": isinstance(pin, LayerPin)}
            for line, pin in done.repinned]})
    pulled = [line.reference for line, pin in done.repinned if not isinstance(pin, LayerPin)]
    for line, pin in done.repinned:
        how = "a layer pin: no layer downloaded" if isinstance(pin, LayerPin) else \
            "a full pin: the image was pulled to hash it"
        note(args, f"updated {source}:{line.line}: {line.reference}: now {pin.image_digest} ({how})")
    if pulled:
        note(args, f"{count(len(pulled), 'full pin')} had to be pulled: {', '.join(pulled)}")
    if not done.repinned:
        note(args, f"{args.update} is current; rewritten unchanged")


def _report_drift(args: argparse.Namespace, source: str, drifts: list[Drift]) -> int:
    """prefetch --check: each line whose tag moved (or that the lock lacks, or that failed), as lines
    or as one document; exit 1 if there is any."""
    lock_path = args.check
    if args.json:
        emit({"lock": lock_path, "from": source, "current": not drifts, "drifts": [{
            "line": d.line.line, "reference": d.line.reference, "platform": d.line.platform,
            "locked": d.entry.data["imageDigest"] if d.entry is not None else None,
            "now": str(d.now) if d.now is not None else None,
            "error": str(d.error) if d.error is not None else None} for d in drifts]})
    else:
        for d in drifts:
            print(f"{source}:{d.line.line}: {d.describe()}")
    note(args, f"{count(len(drifts), 'line')} of {source} no longer as {lock_path} pins it" if drifts else
         f"{lock_path} is current: every tag resolves to the digest it pins")
    return 1 if drifts else 0


def _assemble(sub: Any) -> None:
    p = sub.add_parser("assemble", help="write the image a pin names (a layer pin: from its blobs) as pull writes it",
                       description="Write the image PIN names, byte for byte as `pull` writes it with the same "
                                   "values: a layer pin (prefetch --layers) from its blobs, each verified by its "
                                   "digest and every layer by its diff_id, from the cache, the registry or --blobs; "
                                   "a full pin by pulling it, its hash checked. The output's sha256 is printed.")
    p.add_argument("pin", metavar="PIN", help="a pin as `prefetch --json` printed it (- for stdin)")
    p.add_argument("-o", "--output", required=True, help="where to write the archive or layout")
    p.add_argument("--format", choices=FORMATS, help="default: the pin's")
    p.add_argument("--blobs", metavar="DIR", help="take every manifest and blob from DIR (files, or links to files, "
                   "named by the digest's hex, as an OCI layout's blobs/sha256): nothing is fetched")
    _check_registry(p)
    add_common(p)


def cmd_assemble(args: argparse.Namespace) -> int:
    return _write_pin(args, args.pin, args.blobs)


def _write_pin(args: argparse.Namespace, path: str, blobs: str | None = None) -> int:
    from registry_tools.api.assemble import AssembleOptions, pull_pin, read_pin

    pin = read_pin(path, sys.stdin.read() if path == "-" else None)
    with session_of(args) as session:
        options = AssembleOptions(path, args.output, args.format, blobs, args.check_registry)
        result = pull_pin(options, pin, session)
    return _report_pull(args, result)


def _fetch_blob(sub: Any) -> None:
    p = sub.add_parser("fetch-blob", help="one blob (or manifest) by digest into a file, verified",
                       description="Write the blob NAME@DIGEST names to FILE, streamed through the digest check "
                                   "(what Nix's fetcher of a layer pin runs for each blob). The digest is printed.")
    p.add_argument("reference", metavar="NAME@DIGEST", help="the repository and the blob's (or manifest's) digest")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--size", type=int, help="the blob's size, as the pin lists it (else a HEAD asks)")
    p.add_argument("--manifest", action="store_true", help="a manifest (…/manifests/DIGEST), not a blob")
    p.add_argument("--unchecked", action="store_true",
                   help="keep bytes of the right size whose digest is wrong, with a warning, for a caller that "
                        "checks it (a Nix fixed-output derivation)")
    add_common(p)


def cmd_fetch_blob(args: argparse.Namespace) -> int:
    from registry_tools.api.blob import BlobOptions, fetch_blob

    with session_of(args) as session:
        r = fetch_blob(BlobOptions(args.reference, args.output, args.size, args.manifest, args.unchecked), session)
    if r.mismatch:
        print(f"registry-tools: {r.mismatch}; kept for the caller to reject (--unchecked)", file=sys.stderr)
    doc = {"output": str(r.output), "digest": str(r.digest), "size": r.size, "verified": r.verified}
    return report(args, doc, f"wrote {r.output} ({count(r.size, 'byte')})", str(r.digest))


COMMANDS = {
    "pull": (_pull, cmd_pull),
    "assemble": (_assemble, cmd_assemble),
    "fetch-blob": (_fetch_blob, cmd_fetch_blob),
    "export": (_export, cmd_export),
    "prefetch": (_prefetch, cmd_prefetch),
}
