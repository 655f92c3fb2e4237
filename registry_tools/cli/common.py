"""What the commands share: the session from the options, and how results are printed."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from registry_tools.errors import UsageError
from registry_tools.words import count, size


def session_of(args: argparse.Namespace):
    from registry_tools.registry.client import TransportOptions
    from registry_tools.progress import StderrProgress
    from registry_tools.session import Session

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.range_parts < 1:
        raise UsageError("--range-parts must be at least 1")
    if args.rate_limit_min < 0:
        raise UsageError("--rate-limit-min must be 0 or more")
    transport = TransportOptions(tls_verify=args.tls_verify and not args.insecure,
                                 ca_file=args.ca_file, cert_dir=args.cert_dir, rate_limit_min=args.rate_limit_min,
                                 proxy=args.proxy)
    progress = StderrProgress(quiet=args.quiet, verbose=args.verbose)
    session = Session(cache_dir=args.cache_dir, transport=transport, concurrency=args.jobs,
                      range_parts=args.range_parts, progress=progress, credentials=_credentials(args))
    # Closing the session (at the end, on a failure or Ctrl-C) takes a bar off the terminal first: a
    # message printed then starts a line of its own.
    session.cancel.on_set(progress.finish)
    return session


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
    from registry_tools import endpoint
    from registry_tools.registry.auth import Credential

    routes = []
    for text, role, creds, flag in ((args.dest, "destination", args.dest_creds, "--dest-creds"),
                                    (args.source, "source", args.src_creds, "--src-creds")):
        if creds:
            repository = endpoint.parse(text, role).repository
            if repository is None:
                raise UsageError(f"{flag}: the {role} is not a registry")
            routes.append((repository.domain, repository.path, Credential(*_user_password(creds, flag))))

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


def sent(r) -> str:
    """What a push (or a copy to a registry) sent, as its summary line says it."""
    return (f"{count(len(r.uploaded), 'blob')} sent ({size(r.bytes_uploaded)}), {len(r.mounted)} mounted, "
            f"{len(r.present)} already there, {count(r.manifests_put, 'manifest')} written")


def report_push(args: argparse.Namespace, r) -> None:
    if args.json:
        emit(push_document(r))
        return
    note(args, f"pushed {r.reference}@{r.digest}: {sent(r)}")
    print(f"{r.reference}@{r.digest}")


def dump(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def report(args: argparse.Namespace, doc: object, summary: str, result: object) -> int:
    """`--json`: the document; else the summary on stderr (not with -q) and the result on stdout."""
    if args.json:
        dump(doc)
    else:
        note(args, summary)
        print(result)
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
    elif not Path(args.from_file).is_file():
        what = "is not a file" if Path(args.from_file).exists() else "does not exist"
        raise UsageError(f"--from {args.from_file} {what}")
    else:
        with open(args.from_file, encoding="utf-8") as f:
            text, source = f.read(), args.from_file
    return parse_lock_input(text, source), source
