"""The commands: each reads its arguments, calls the Python API and prints the result."""
from __future__ import annotations

import argparse
import getpass
import math
import sys
from pathlib import Path

from registry_tools.errors import UsageError

# The command functions import what they use: a command pays only for its own modules.


def session_of(args: argparse.Namespace):
    from registry_tools.registry.client import TransportOptions
    from registry_tools.progress import StderrProgress
    from registry_tools.session import Session

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.rate_limit_min < 0:
        raise UsageError("--rate-limit-min must be 0 or more")
    transport = TransportOptions(tls_verify=args.tls_verify and not args.insecure,
                                 ca_file=args.ca_file, cert_dir=args.cert_dir, rate_limit_min=args.rate_limit_min,
                                 proxy=args.proxy)
    return Session(cache_dir=args.cache_dir, transport=transport, concurrency=args.jobs,
                   progress=StderrProgress(quiet=args.quiet, verbose=args.verbose), credentials=_credentials(args))


def _credentials(args: argparse.Namespace):
    from registry_tools.registry.auth import static_credentials
    from registry_tools.registry.credentials import CredentialStore

    if getattr(args, "creds", None):
        if getattr(args, "src_creds", None) or getattr(args, "dest_creds", None):
            raise UsageError("give --creds, or --src-creds and --dest-creds, not both")
        user, password = _user_password(args.creds, "--creds")
        return static_credentials(user, password)
    base = CredentialStore([Path(args.authfile)]) if getattr(args, "authfile", None) else CredentialStore()
    if getattr(args, "src_creds", None) or getattr(args, "dest_creds", None):
        return _per_endpoint(args, base)
    return base


def _user_password(text: str, flag: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise UsageError(f"{flag} takes USER:PASSWORD")
    return user, password


def _per_endpoint(args: argparse.Namespace, base):
    """copy's --src-creds and --dest-creds (skopeo's): each for its own repository (and registry)."""
    from registry_tools.api.copy import endpoint
    from registry_tools.registry.auth import Credential

    routes = []
    for text, role, creds, flag in ((args.dest, "destination", args.dest_creds, "--dest-creds"),
                                    (args.source, "source", args.src_creds, "--src-creds")):
        if creds:
            e = endpoint(text, role)
            if e.kind != "registry" or e.ref is None:
                raise UsageError(f"{flag}: the {role} is not a registry")
            routes.append((e.ref.domain, e.ref.path, Credential(*_user_password(creds, flag))))

    def lookup(domain: str, repo: str):
        for d, r, cred in routes:
            if d == domain and r == repo:
                return cred
        for d, _, cred in routes:  # a request of the registry's own (no repository): its first route
            if d == domain and not repo:
                return cred
        return base(domain, repo)
    return lookup


def emit(doc: dict) -> None:
    """A command's result as one JSON document on stdout (`--json`)."""
    import json

    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def note(args: argparse.Namespace, line: str) -> None:
    """A summary line on stderr, unless -q or --json asked for the result alone."""
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        print(line, file=sys.stderr)


def push_document(r) -> dict:
    """What a push did; the same keys as `copy --json`."""
    return {"reference": r.reference, "digest": str(r.digest) if r.digest else None,
            "blobsUploaded": len(r.uploaded), "blobsMounted": len(r.mounted), "blobsSkipped": len(r.present),
            "bytesSent": r.bytes_uploaded, "manifestsPut": r.manifests_put}


def cmd_pull(args: argparse.Namespace) -> int:
    from registry_tools.api.pull import pull_image

    with session_of(args) as session:
        result = pull_image(
            args.image, args.output, digest=args.digest, format=args.format, platform=args.platform,
            os=args.os, arch=args.arch, variant=args.variant, final_image_name=args.final_image_name,
            final_image_tag=args.final_image_tag, hash=args.hash, session=session,
            cross_arch=args.allow_cross_arch, all_platforms=args.all_platforms, verify_key=args.verify_key,
        )
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


def cmd_prefetch(args: argparse.Namespace) -> int:
    from registry_tools.api.prefetch import dumps, prefetch

    if args.check or args.update:
        from registry_tools.cli.copying import cmd_prefetch_drift

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
        pin = prefetch(
            image, extra[0] if extra else None, platform=args.platform, os=args.os, arch=args.arch,
            variant=args.variant, final_image_name=args.final_image_name, final_image_tag=args.final_image_tag,
            format=args.format, session=session, cross_arch=args.allow_cross_arch, all_platforms=args.all_platforms,
        )
    print(dumps(pin.to_dict()) if args.json else pin.to_nix(), end="" if args.json else "\n")
    return 0


def lock_lines(args: argparse.Namespace):
    """The lines of `prefetch --from FILE` (each a reference and a platform), checked."""
    from registry_tools.api.prefetch import parse_lock_input

    if not args.from_file:
        raise UsageError("--check and --update compare a lock with the list it was made from: give --from FILE")
    if args.image or args.image_name or args.tag_or_digest or args.image_tag or args.image_digest:
        raise UsageError("--from lists the images; do not name one on the command line too")
    if args.platform or args.os or args.arch or args.variant or args.final_image_name or args.final_image_tag:
        raise UsageError("with --from, give a platform per line in the file")
    if args.from_file == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        with open(args.from_file, encoding="utf-8") as f:
            text, source = f.read(), args.from_file
    return parse_lock_input(text, source), source


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


def _report_push(args: argparse.Namespace, r) -> None:
    if args.json:
        emit(push_document(r))
        return
    if not args.quiet:
        print(f"pushed {r.reference}@{r.digest}: {len(r.uploaded)} blob(s) uploaded "
              f"({r.bytes_uploaded / 1e6:.1f} MB), {len(r.mounted)} mounted, {len(r.present)} already there, "
              f"{r.manifests_put} manifest(s) written", file=sys.stderr)
    print(f"{r.reference}@{r.digest}")


def cmd_push(args: argparse.Namespace) -> int:
    from registry_tools.api.index import parse_annotations
    from registry_tools.api.push import push

    annotations = parse_annotations(args.annotation)
    with session_of(args) as session:
        result = push(args.source, args.dest, session, annotations)
    _report_push(args, result)
    return 0


def _wanted(args: argparse.Namespace):
    if not (args.platform or args.os or args.arch or args.variant):
        return None
    from registry_tools.model.platform import requested

    return requested(args.platform, args.os, args.arch, args.variant)


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from registry_tools.api.inspect import platform_digest, resolve, summary

    wanted = _wanted(args)
    if args.raw and args.json:
        raise UsageError("--raw prints the manifest's own bytes; without it the output is JSON already")
    with session_of(args) as session:
        r = resolve(args.image, session)
        if args.raw:
            if wanted is not None:
                digest = platform_digest(r, wanted)
                raw, _ = session.source(r.ref).manifest_bytes(digest)
            else:
                raw = r.raw
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            return 0
        print(json.dumps(summary(r, session, wanted), indent=2))
    return 0


def cmd_digest(args: argparse.Namespace) -> int:
    from registry_tools.api.inspect import platform_digest, resolve

    with session_of(args) as session:
        digest = platform_digest(resolve(args.image, session), _wanted(args))
    if args.json:
        emit({"reference": args.image, "digest": str(digest)})
    else:
        print(digest)
    return 0


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise UsageError(f"--max-size: {text!r} is not a size like 20G or 500M") from None
    if not math.isfinite(value) or value < 0 or value * units[unit] > 2 ** 62:
        raise UsageError(f"--max-size: {text!r} is not a size like 20G or 500M")
    return int(value * units[unit])


def cmd_cache(args: argparse.Namespace) -> int:
    from registry_tools.store.cache import BlobCache
    from registry_tools.progress import human

    cache = BlobCache(args.cache_dir)
    removed = freed = 0
    if args.action == "clear":
        removed, freed = cache.usage()
        cache.clear()
        note(args, f"cleared {cache.root}")
    elif args.action == "prune":
        if args.max_size is None and args.older_than is None:
            raise UsageError("prune needs --max-size and/or --older-than")
        removed, freed = cache.prune(parse_size(args.max_size) if args.max_size else None,
                                     args.older_than * 86400 if args.older_than is not None else None)
        note(args, f"removed {removed} blobs, {human(freed)}")
    count, total = cache.usage()
    if args.json:
        emit({"cacheDir": str(cache.root), "blobs": count, "cacheSize": total, "blobsRemoved": removed,
              "bytesFreed": freed})
    elif args.action == "info":
        print(f"{cache.root}: {count} blobs, {human(total)}")
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    from registry_tools.registry.auth import static_credentials
    from registry_tools.registry.client import TransportOptions
    from registry_tools.registry.credentials import store_login
    from registry_tools.session import Session

    username = args.username
    password = args.password
    if args.password_stdin:
        if password:
            raise UsageError("give the password once: --password or --password-stdin")
        password = sys.stdin.readline().rstrip("\r\n")
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("give --username (no terminal to ask on)")
        username = input("Username: ")
    if not password:
        if not sys.stdin.isatty():
            raise UsageError("give the password with --password-stdin (no terminal to ask on)")
        password = getpass.getpass("Password: ")
    domain = normalize_registry(args.registry)
    transport = TransportOptions(tls_verify=args.tls_verify, ca_file=args.ca_file, proxy=args.proxy)
    with Session(transport=transport, credentials=static_credentials(username, password)) as session:
        session.registry(domain).check_login()
    path = store_login(domain, username, password, Path(args.authfile) if args.authfile else None)
    if args.json:
        emit({"registry": domain, "authFile": str(path)})
    note(args, f"login succeeded for {domain}; credentials saved in {path}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from registry_tools.registry.credentials import remove_login

    domain = normalize_registry(args.registry)
    path = Path(args.authfile) if args.authfile else None
    if not remove_login(domain, path):
        print(f"registry-tools: not logged in to {domain}", file=sys.stderr)
        return 1
    if args.json:
        emit({"registry": domain, "removed": True})
    note(args, f"removed the credentials for {domain}")
    return 0


def normalize_registry(text: str) -> str:
    from registry_tools.registry.credentials import normalize_key

    host = normalize_key(text)
    if "/" in host or not host:
        raise UsageError(f"{text!r} is not a registry host (e.g. ghcr.io or localhost:5000)")
    return host


def cmd_completion(args: argparse.Namespace) -> int:
    """The shell's completion script, made by argcomplete from this program's own parser."""
    from argcomplete import shellcode

    sys.stdout.write(shellcode(["registry-tools"], shell=args.shell))
    return 0


def _copying(name: str):
    def run(args: argparse.Namespace) -> int:
        from registry_tools.cli import copying

        return getattr(copying, f"cmd_{name}")(args)
    return run


def cmd_build(args: argparse.Namespace) -> int:
    from registry_tools.cli.building import cmd_build as run

    return run(args)


COMMANDS = {"pull": cmd_pull, "prefetch": cmd_prefetch, "build": cmd_build, "push": cmd_push,
            "inspect": cmd_inspect, "digest": cmd_digest, "cache": cmd_cache, "login": cmd_login,
            "logout": cmd_logout, "completion": cmd_completion,
            **{n: _copying(n) for n in ("copy", "sync", "tags", "tag", "delete", "index", "attach", "referrers", "sign",
                                      "verify", "export")},
            "generate-key": _copying("generate_key")}
