"""The `registry-tools` command: argument parsing and messages over the Python API."""
from __future__ import annotations

import argparse
import getpass
import logging
import math
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from registry_tools import __version__
from registry_tools.errors import RegistryToolsError, UsageError
from registry_tools.formats import FORMATS

# The command functions import what they use: a command pays only for its own modules.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit 2 with one line, as bad usage must
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("registry and cache")
    g.add_argument("--tls-verify", type=_bool, default=True, metavar="BOOL",
                   help="verify TLS certificates (default true)")
    g.add_argument("--insecure", action="store_true", help="same as --tls-verify=false")
    g.add_argument("--ca-file", help="CA bundle to trust (default: SSL_CERT_FILE or the system's)")
    g.add_argument("--cert-dir", help="directory of extra CA certificates (*.crt)")
    g.add_argument("--cache-dir", help="blob cache (default: $REGISTRY_TOOLS_CACHE or ~/.cache/registry-tools)")
    g.add_argument("--jobs", type=int, default=4, help="concurrent downloads (default 4)")
    g.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry (else the auth files)")
    g.add_argument("--authfile", help="auth file to read credentials from (default: the usual ones)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    g.add_argument("--verbose", "-v", action="store_true", help="log requests and retries (never secrets)")


def _add_platform(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("platform (for a multi-arch image)")
    g.add_argument("--platform", help="OS/ARCH[/VARIANT], e.g. linux/arm64/v8")
    g.add_argument("--os", help="operating system (default linux)")
    g.add_argument("--arch", help="CPU architecture (default: this machine's)")
    g.add_argument("--variant", help="CPU variant, e.g. v7")
    g.add_argument("--allow-cross-arch", action="store_true",
                   help="let amd64 fall back to 386 and arm64 to arm when the index has no exact match")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="registry-tools", description="Pin, pull, build and push OCI and Docker images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("pull", help="pull an image pinned by digest into an archive or layout")
    p.add_argument("image", help="IMAGE or IMAGE@sha256:…")
    p.add_argument("--digest", help="the image digest (index or manifest) to pull")
    p.add_argument("--hash", help="expected sha256 of the output (SRI, hex or Nix base32)")
    p.add_argument("--sha256", dest="hash", help=argparse.SUPPRESS)
    p.add_argument("--final-image-name", help="name to record in the archive (default: IMAGE's name)")
    p.add_argument("--final-image-tag", default="latest", help="tag to record in the archive (default latest)")
    p.add_argument("--format", default="docker-archive", choices=FORMATS)
    p.add_argument("-o", "--output", required=True, help="where to write the archive or layout")
    _add_platform(p)
    _add_common(p)

    p = sub.add_parser("prefetch", help="resolve a tag, pull, and print the pin (Nix or JSON)",
                       description="Resolve IMAGE's tag, pull it as `pull` would, and print what "
                                   "`pull` (or nixpkgs' pullImage) needs to reproduce it.")
    p.add_argument("image", nargs="?", help="IMAGE, IMAGE:TAG or IMAGE@DIGEST")
    p.add_argument("tag_or_digest", nargs="?", metavar="TAG|DIGEST", help="tag or digest (default: latest)")
    p.add_argument("--image-name", help="same as IMAGE")
    p.add_argument("--image-tag", help="same as TAG")
    p.add_argument("--image-digest", help="same as DIGEST")
    p.add_argument("--final-image-name", help="name recorded in the archive (default: IMAGE as typed)")
    p.add_argument("--final-image-tag", help="tag recorded in the archive (default: TAG, or latest)")
    p.add_argument("--format", default="docker-archive", choices=FORMATS)
    p.add_argument("--json", action="store_true", help="print JSON instead of a Nix attribute set")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="pin every image listed in FILE (one 'IMAGE [PLATFORM]' a line; - for stdin)")
    _add_platform(p)
    _add_common(p)

    p = sub.add_parser("build", help="build a layered image from a JSON spec (buildLayeredImage)")
    p.add_argument("spec", metavar="SPEC.json", help="the build spec")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="ARCHIVE", help="write a docker-archive file")
    out.add_argument("--oci", metavar="DIR", help="write an OCI image layout directory")
    out.add_argument("--stream", action="store_true",
                     help="stream an uncompressed docker-archive to stdout (streamLayeredImage)")
    out.add_argument("--push", metavar="REF", help="push straight to a registry (no tarball is written)")
    _add_common(p)

    p = sub.add_parser("push", help="push a docker-archive, oci-archive or OCI layout to a registry")
    p.add_argument("source", help="an OCI layout directory (DIR or DIR:TAG), an oci-archive or a docker-archive")
    p.add_argument("dest", help="REGISTRY/REPOSITORY[:TAG]")
    _add_common(p)

    p = sub.add_parser("inspect", help="show what a reference points to (no layer is pulled)")
    p.add_argument("image", help="IMAGE[:TAG|@DIGEST]")
    p.add_argument("--raw", action="store_true", help="print the manifest bytes exactly as served")
    _add_platform(p)
    _add_common(p)

    p = sub.add_parser("digest", help="print the digest a reference resolves to")
    p.add_argument("image", help="IMAGE[:TAG|@DIGEST]")
    _add_platform(p)
    _add_common(p)

    p = sub.add_parser("cache", help="show, prune or clear the blob cache")
    p.add_argument("action", choices=("info", "prune", "clear"))
    p.add_argument("--max-size", metavar="SIZE", help="prune: keep at most this much (e.g. 20G, 500M)")
    p.add_argument("--older-than", metavar="DAYS", type=_days, help="prune: remove what was unused this long")
    p.add_argument("--cache-dir", help="the cache (default: $REGISTRY_TOOLS_CACHE or ~/.cache/registry-tools)")

    p = sub.add_parser("login", help="check credentials against a registry and save them")
    p.add_argument("registry", help="registry host, e.g. ghcr.io or localhost:5000")
    p.add_argument("-u", "--username", help="user name (asked for if missing and on a terminal)")
    p.add_argument("-p", "--password", help="password (prefer --password-stdin: this one shows in ps)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--authfile", help="file to write (default: $REGISTRY_AUTH_FILE, else docker's config.json)")
    p.add_argument("--tls-verify", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--ca-file")
    p.add_argument("--verbose", "-v", action="store_true")

    p = sub.add_parser("logout", help="remove a registry's saved credentials")
    p.add_argument("registry")
    p.add_argument("--authfile", help="file to change (default: $REGISTRY_AUTH_FILE, else docker's config.json)")
    return parser


def _session(args: argparse.Namespace):
    from registry_tools.registry.client import TransportOptions
    from registry_tools.progress import StderrProgress
    from registry_tools.session import Session

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    transport = TransportOptions(tls_verify=args.tls_verify and not args.insecure,
                                 ca_file=args.ca_file, cert_dir=args.cert_dir)
    return Session(cache_dir=args.cache_dir, transport=transport, concurrency=args.jobs,
                   progress=StderrProgress(quiet=args.quiet), credentials=_credentials(args))


def _credentials(args: argparse.Namespace):
    from registry_tools.registry.auth import static_credentials
    from registry_tools.registry.credentials import CredentialStore

    if getattr(args, "creds", None):
        user, sep, password = args.creds.partition(":")
        if not sep or not user:
            raise UsageError("--creds takes USER:PASSWORD")
        return static_credentials(user, password)
    if getattr(args, "authfile", None):
        return CredentialStore([Path(args.authfile)])
    return CredentialStore()


def cmd_pull(args: argparse.Namespace) -> int:
    from registry_tools.api.pull import pull_image

    progress_quiet = args.quiet
    with _session(args) as session:
        result = pull_image(
            args.image, args.output, digest=args.digest, format=args.format, platform=args.platform,
            os=args.os, arch=args.arch, variant=args.variant, final_image_name=args.final_image_name,
            final_image_tag=args.final_image_tag, hash=args.hash, session=session,
            cross_arch=args.allow_cross_arch,
        )
    if not progress_quiet:
        print(f"wrote {result.output} ({result.format}, {result.platform}, manifest {result.manifest_digest})",
              file=sys.stderr)
    print(result.hash_sri)
    return 0


def cmd_prefetch(args: argparse.Namespace) -> int:
    from registry_tools.api.prefetch import dumps, prefetch

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
    with _session(args) as session:
        pin = prefetch(
            image, extra[0] if extra else None, platform=args.platform, os=args.os, arch=args.arch,
            variant=args.variant, final_image_name=args.final_image_name, final_image_tag=args.final_image_tag,
            format=args.format, session=session, cross_arch=args.allow_cross_arch,
        )
    print(dumps(pin.to_dict()) if args.json else pin.to_nix(), end="" if args.json else "\n")
    return 0


def _prefetch_lock(args: argparse.Namespace) -> int:
    from registry_tools.api.prefetch import Pin, dumps, lock_document, lock_nix, parse_lock_input, prefetch_many

    if args.image or args.image_name or args.tag_or_digest or args.image_tag or args.image_digest:
        raise UsageError("--from lists the images; do not name one on the command line too")
    if args.platform or args.os or args.arch or args.variant or args.final_image_name or args.final_image_tag:
        raise UsageError("with --from, give a platform per line in the file")
    if args.from_file == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        with open(args.from_file, encoding="utf-8") as f:
            text, source = f.read(), args.from_file
    lines = parse_lock_input(text, source)
    with _session(args) as session:
        results = prefetch_many(lines, session=session, jobs=args.jobs, format=args.format)
    failed = [(item, r) for item, r in results if not isinstance(r, Pin)]
    for item, err in failed:
        print(f"registry-tools: {source}:{item.line}: {item.reference}: {err}", file=sys.stderr)
    if failed:
        print(f"registry-tools: {len(failed)} of {len(results)} image(s) failed; nothing printed", file=sys.stderr)
        return max(e.exit_code for _, e in failed)  # type: ignore[union-attr]
    print(dumps(lock_document(results)) if args.json else lock_nix(results), end="" if args.json else "\n")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from registry_tools.api.build import build
    from registry_tools.api.push import build_and_push
    from registry_tools.engine import repairing
    from registry_tools.builder.spec import load_spec

    spec = load_spec(args.spec)
    if args.stream and sys.stdout.isatty():
        raise UsageError("--stream writes a tar archive: send it to a pipe or a file, not a terminal")
    if args.push:
        with _session(args) as session:
            pushed, image = repairing(session.cache, lambda: build_and_push(spec, args.push, session))
        _report_push(args, pushed)
        return 0
    with _session(args) as session:
        result = build(spec, output=args.output, oci=args.oci,
                       stream=sys.stdout.buffer if args.stream else None, session=session)
    where = args.output or args.oci or "stdout"
    digest = f", manifest {result.manifest_digest}" if result.manifest_digest else ""
    if not args.quiet:
        print(f"built {result.name}:{result.tag} ({result.layers} layers, config {result.config_digest}{digest}) "
              f"to {where}", file=sys.stderr)
    if not args.stream:
        print(f"{result.name}:{result.tag}")
    return 0


def _report_push(args: argparse.Namespace, r) -> None:
    if not args.quiet:
        print(f"pushed {r.reference}@{r.digest}: {len(r.uploaded)} blob(s) uploaded "
              f"({r.bytes_uploaded / 1e6:.1f} MB), {len(r.mounted)} mounted, {len(r.present)} already there, "
              f"{r.manifests_put} manifest(s) written", file=sys.stderr)
    print(f"{r.reference}@{r.digest}")


def cmd_push(args: argparse.Namespace) -> int:
    from registry_tools.api.push import push

    with _session(args) as session:
        result = push(args.source, args.dest, session)
    _report_push(args, result)
    return 0


def _wanted(args: argparse.Namespace):
    if not (args.platform or args.os or args.arch or args.variant):
        return None
    from registry_tools.api.pull import wanted_platform

    return wanted_platform(args.platform, args.os, args.arch, args.variant)


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from registry_tools.api.inspect import platform_digest, resolve, summary

    wanted = _wanted(args)
    with _session(args) as session:
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

    with _session(args) as session:
        print(platform_digest(resolve(args.image, session), _wanted(args)))
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
    if args.action == "info":
        count, total = cache.usage()
        print(f"{cache.root}: {count} blobs, {human(total)}")
    elif args.action == "clear":
        cache.clear()
        print(f"cleared {cache.root}", file=sys.stderr)
    else:
        if args.max_size is None and args.older_than is None:
            raise UsageError("prune needs --max-size and/or --older-than")
        removed, freed = cache.prune(parse_size(args.max_size) if args.max_size else None,
                                     args.older_than * 86400 if args.older_than is not None else None)
        print(f"removed {removed} blobs, {human(freed)}", file=sys.stderr)
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
    transport = TransportOptions(tls_verify=args.tls_verify, ca_file=args.ca_file)
    with Session(transport=transport, credentials=static_credentials(username, password)) as session:
        session.registry(domain).check_login()
    path = store_login(domain, username, password, Path(args.authfile) if args.authfile else None)
    print(f"login succeeded for {domain}; credentials saved in {path}", file=sys.stderr)
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from registry_tools.registry.credentials import remove_login

    domain = normalize_registry(args.registry)
    path = Path(args.authfile) if args.authfile else None
    if not remove_login(domain, path):
        print(f"registry-tools: not logged in to {domain}", file=sys.stderr)
        return 1
    print(f"removed the credentials for {domain}", file=sys.stderr)
    return 0


def normalize_registry(text: str) -> str:
    from registry_tools.registry.credentials import normalize_key

    host = normalize_key(text)
    if "/" in host or not host:
        raise UsageError(f"{text!r} is not a registry host (e.g. ghcr.io or localhost:5000)")
    return host


COMMANDS = {"pull": cmd_pull, "prefetch": cmd_prefetch, "build": cmd_build, "push": cmd_push,
            "inspect": cmd_inspect, "digest": cmd_digest, "cache": cmd_cache, "login": cmd_login,
            "logout": cmd_logout}


def _skip_unused_imports() -> None:
    """httpcore imports trio when it is installed; this program never uses it (saves ~80 ms).
    Only in the command's own process, and only if nothing imported trio already."""
    if "trio" not in sys.modules and "httpcore" not in sys.modules:
        sys.modules["trio"] = None  # type: ignore[assignment]


def _exit_now(code: int, grace: float = 0.8) -> NoReturn:
    """Leave within about a second. The session is closed and cancelled by now, so workers stop
    at their next chunk or wake from their sleeps and remove their temporary files; give them
    `grace` seconds for that, then go, even if one is still blocked in a read (at interpreter
    exit it would otherwise be joined, for as long as its read timeout)."""
    import threading
    import time

    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        _skip_unused_imports()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return int(e.code or 0)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(name)s: %(message)s", stream=sys.stderr)
    # httpx and httpcore log whole URLs (pre-signed ones carry secrets) and headers: never let them.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("registry-tools: interrupted; the destination was left untouched", file=sys.stderr)
        if argv is None:
            _exit_now(130)
        return 130
    except BrokenPipeError:
        # The reader went away (`… --stream | head`): stop quietly, as Unix tools do.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except RegistryToolsError as e:
        print(f"registry-tools: {e}", file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:
        print(f"registry-tools: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except PermissionError as e:
        print(f"registry-tools: permission denied: {e.filename}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"registry-tools: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
