"""The parser's shared pieces: the parser class, value types and the option groups."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, NoReturn

from registry_tools.cli.help import suggestion, unknown_option
from registry_tools.workers import JOBS


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated long options: `pull --all` must not be read as --allow-cross-arch.
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self._words: list[str] = []

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """An option this command does not have is named (with the nearest one it has) before
        anything else is said: before a missing argument, which it may well have caused."""
        self._words = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        unknown = self._unknown(extras)
        if unknown:
            self.error(unknown_option(unknown, list(self._option_string_actions), self.prog))
        return namespace, extras

    def _unknown(self, words: list[str]) -> str | None:
        """The first word that is an option (up to its =) this parser does not know."""
        for word in words:
            if word == "--":
                return None
            option = word.split("=", 1)[0]
            if option.startswith("-") and option != "-" and not option[1:2].isdigit() \
                    and option not in self._option_string_actions and \
                    (option.startswith("--") or option[:2] not in self._option_string_actions):
                return option
        return None

    def error(self, message: str) -> NoReturn:  # exit 2 with one line, as bad usage must
        unknown = self._unknown(self._words) if message.startswith("the following arguments are required") \
            else None
        if unknown:
            message = unknown_option(unknown, list(self._option_string_actions), self.prog)
        self.exit(2, f"{self.prog}: error: {suggestion(message)}\n")


def boolean(text: str) -> bool:
    t = text.lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}")
    return value


def proxy(text: str) -> str:
    """`--proxy URL`, checked as the options are read (bad usage: exit 2)."""
    from registry_tools.errors import UsageError
    from registry_tools.registry.network import valid_proxy

    try:
        return valid_proxy(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("proxy ")) from None


def add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("registry and cache")
    g.add_argument("--tls-verify", type=boolean, default=True, metavar="BOOL",
                   help="verify TLS certificates (default true)")
    g.add_argument("--insecure", action="store_true", help="same as --tls-verify=false")
    g.add_argument("--ca-file", help="CA bundle to trust (default: SSL_CERT_FILE or the system's)")
    g.add_argument("--cert-dir", help="certificates for the registry, as skopeo's: *.crt (CAs), and a *.cert with "
                                      "its *.key (a client certificate for mutual TLS); per-host ones are also read "
                                      "from /etc/docker/certs.d/HOST:PORT/ and /etc/containers/certs.d/HOST:PORT/")
    g.add_argument("--proxy", metavar="URL", type=proxy,
                   help="an HTTP(S) proxy for every request (default: https_proxy, http_proxy, all_proxy and "
                        "no_proxy from the environment, upper or lower case)")
    g.add_argument("--cache-dir", help="blob cache (default: $REGISTRY_TOOLS_CACHE or ~/.cache/registry-tools)")
    g.add_argument("--jobs", type=int, default=JOBS,
                   help="blob downloads and uploads at once, whatever part of the operation makes them, and images "
                        "at once for a lock file or a sync (default 6, as skopeo's parallel layer downloads)")
    g.add_argument("--range-parts", type=int, default=4, metavar="N",
                   help="a blob of 32 MiB or more whose connection proves slow (under 32 MB/s) is fetched by up "
                        "to N Range requests at once, each taking a --jobs transfer no other blob waits for (for "
                        "links that cap each connection; default 4; 1: one connection per blob)")
    g.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry (else the auth files)")
    g.add_argument("--authfile", help="auth file to read credentials from (default: the usual ones)")
    g.add_argument("--rate-limit-min", type=int, default=3, metavar="N",
                   help="stop (or wait, when the reset is near) before a registry's announced rate limit "
                        "(RateLimit-Remaining) falls to N manifest requests (default 3; 0: never)")
    g.add_argument("--json", action="store_true",
                   help="print the result as one JSON document on stdout (its keys: docs/cli.md and "
                        "schemas/cli-output.schema.json; errors stay one line on stderr)")
    g.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    g.add_argument("--verbose", "-v", action="store_true",
                   help="a line per request, layer and blob on stderr (never secrets)")


PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6", "linux/386",
             "linux/ppc64le", "linux/s390x", "linux/riscv64", "windows/amd64")


def complete_platforms(action: argparse.Action, whole: bool = False) -> argparse.Action:
    """The platforms a shell offers for the option; `whole`: `all` too (the option takes it)."""
    action.completer = lambda **_: PLATFORMS + (("all",) if whole else ())  # type: ignore[attr-defined]
    return action


def add_platform(p: argparse.ArgumentParser, whole: bool = False) -> None:
    """--platform and its parts; `whole`: the command takes `--platform all` (the whole index)."""
    g = p.add_argument_group("platform (for a multi-arch image)")
    complete_platforms(g.add_argument("--platform", help="OS/ARCH[/VARIANT], e.g. linux/arm64/v8" +
                                      (", or all: the whole index" if whole else "")), whole)
    g.add_argument("--os", help="operating system (default linux)")
    g.add_argument("--arch", help="CPU architecture (default: this machine's)")
    g.add_argument("--variant", help="CPU variant, e.g. v7")
    g.add_argument("--allow-cross-arch", action="store_true",
                   help="let amd64 fall back to 386 and arm64 to arm when the index has no exact match")


def add_podman(p: argparse.ArgumentParser) -> None:
    """podman's own options, for a podman:NAME[:TAG] destination (every command that writes to one)."""
    g = p.add_argument_group("podman (a podman:NAME[:TAG] destination)")
    g.add_argument("--podman-arg", action="append", default=[], metavar="ARG",
                   help="one argument for podman itself, before `load` (repeatable; write --podman-arg=--root=DIR): "
                        "--root, --runroot, --storage-driver, … (default: $REGISTRY_TOOLS_PODMAN_ARGS, split as a "
                        "shell would)")
