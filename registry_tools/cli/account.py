"""The machine's side: the blob cache, saved credentials, shell completion."""
from __future__ import annotations

import argparse
import getpass
import math
import sys
from pathlib import Path
from typing import Any

from registry_tools.cli.common import emit, note
from registry_tools.cli.options import boolean, days, proxy
from registry_tools.errors import UsageError


def _cache(sub: Any) -> None:
    p = sub.add_parser("cache", help="show, prune or clear the blob cache")
    p.add_argument("action", choices=("info", "prune", "clear"),
                   help="info: where the cache is and its size; prune: remove blobs by --max-size or "
                        "--older-than; clear: remove every blob")
    p.add_argument("--max-size", metavar="SIZE", help="prune: keep at most this much (e.g. 20G, 500M)")
    p.add_argument("--older-than", metavar="DAYS", type=days, help="prune: remove what was unused this long")
    p.add_argument("--cache-dir", help="the cache (default: $REGISTRY_TOOLS_CACHE or ~/.cache/registry-tools)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result")


def cmd_cache(args: argparse.Namespace) -> int:
    from registry_tools.store.cache import BlobCache
    from registry_tools import words

    pruning = [flag for flag, value in (("--max-size", args.max_size), ("--older-than", args.older_than))
               if value is not None]
    if pruning and args.action != "prune":  # never ignored: `clear --older-than 3` would empty the whole cache
        raise UsageError(f"{pruning[0]} is an option of `cache prune`; `cache {args.action}` takes none "
                         "(nothing was done)")
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
        note(args, f"removed {words.count(removed, 'blob')}, {words.size(freed)}")
    count, total = cache.usage()
    if args.json:
        emit({"cacheDir": str(cache.root), "blobs": count, "cacheSize": total, "blobsRemoved": removed,
              "bytesFreed": freed})
    elif args.action == "info":
        print(f"{cache.root}: {words.count(count, 'blob')}, {words.size(total)}")
    return 0


def _login(sub: Any) -> None:
    p = sub.add_parser("login", help="check credentials against a registry and save them")
    p.add_argument("registry", help="registry host, e.g. ghcr.io or localhost:5000")
    p.add_argument("-u", "--username", help="user name (asked for if missing and on a terminal)")
    p.add_argument("-p", "--password", help="password (prefer --password-stdin: this one shows in ps)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--authfile", help="file to write (default: $REGISTRY_AUTH_FILE, else docker's config.json)")
    p.add_argument("--tls-verify", type=boolean, default=True, metavar="BOOL",
                   help="verify the registry's TLS certificate (default true)")
    p.add_argument("--ca-file", help="CA bundle to trust (default: SSL_CERT_FILE or the system's)")
    p.add_argument("--proxy", metavar="URL", type=proxy, help="an HTTP(S) proxy (default: from the environment)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    p.add_argument("--verbose", "-v", action="store_true", help="a line per request on stderr (never secrets)")


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
        if not password:
            raise UsageError("--password-stdin: standard input held no password; pipe it in: printf '%s' "
                             f"\"$TOKEN\" | registry-tools login {args.registry} -u USER --password-stdin")
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


def _logout(sub: Any) -> None:
    p = sub.add_parser("logout", help="remove a registry's saved credentials")
    p.add_argument("registry", help="registry host whose saved credentials to remove, e.g. ghcr.io")
    p.add_argument("--authfile", help="file to change (default: $REGISTRY_AUTH_FILE, else docker's config.json)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result")


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


def _completion(sub: Any) -> None:
    p = sub.add_parser("completion", help="print the shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell to print the script for")


def cmd_completion(args: argparse.Namespace) -> int:
    """The shell's completion script, made by argcomplete from this program's own parser."""
    from argcomplete import shellcode

    sys.stdout.write(shellcode(["registry-tools"], shell=args.shell))
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


def normalize_registry(text: str) -> str:
    from registry_tools.registry.credentials import normalize_key

    host = normalize_key(text)
    if "/" in host or not host:
        raise UsageError(f"{text!r} is not a registry host (e.g. ghcr.io or localhost:5000)")
    return host


COMMANDS = {
    "cache": (_cache, cmd_cache),
    "login": (_login, cmd_login),
    "logout": (_logout, cmd_logout),
    "completion": (_completion, cmd_completion),
}
