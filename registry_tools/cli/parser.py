"""The argument parser: one function per command, the shared option groups, the value types."""
from __future__ import annotations

import argparse
import math
from typing import Any, NoReturn

from registry_tools import __version__
from registry_tools.cli.help import suggestion, teach
from registry_tools.formats import FORMATS


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated long options: `pull --all` must not be read as --allow-cross-arch.
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # exit 2 with one line, as bad usage must
        self.exit(2, f"{self.prog}: error: {suggestion(message)}\n")


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
    g.add_argument("--cert-dir", help="certificates for the registry, as skopeo's: *.crt (CAs), and a *.cert with "
                                      "its *.key (a client certificate for mutual TLS); per-host ones are also read "
                                      "from /etc/docker/certs.d/HOST:PORT/ and /etc/containers/certs.d/HOST:PORT/")
    g.add_argument("--proxy", metavar="URL",
                   help="an HTTP(S) proxy for every request (default: https_proxy, http_proxy, all_proxy and "
                        "no_proxy from the environment, upper or lower case)")
    g.add_argument("--cache-dir", help="blob cache (default: $REGISTRY_TOOLS_CACHE or ~/.cache/registry-tools)")
    g.add_argument("--jobs", type=int, default=4,
                   help="blob downloads and uploads at once, whatever part of the operation makes them, and images "
                        "at once for a lock file or a sync (default 4)")
    g.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry (else the auth files)")
    g.add_argument("--authfile", help="auth file to read credentials from (default: the usual ones)")
    g.add_argument("--rate-limit-min", type=int, default=3, metavar="N",
                   help="stop (or wait, when the reset is near) before a registry's announced rate limit "
                        "(RateLimit-Remaining) falls to N manifest requests (default 3; 0: never)")
    g.add_argument("--json", action="store_true",
                   help="print the result as one JSON document on stdout (keys in the README; errors stay one "
                        "line on stderr)")
    g.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    g.add_argument("--verbose", "-v", action="store_true",
                   help="a line per request, layer and blob on stderr (never secrets)")


PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6", "linux/386",
             "linux/ppc64le", "linux/s390x", "linux/riscv64", "windows/amd64")


def _complete_platforms(action: argparse.Action) -> argparse.Action:
    action.completer = lambda **_: PLATFORMS  # type: ignore[attr-defined]
    return action


def _add_platform(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("platform (for a multi-arch image)")
    _complete_platforms(g.add_argument("--platform", help="OS/ARCH[/VARIANT], e.g. linux/arm64/v8 (pull and "
                                                          "prefetch: all, for the whole index)"))
    g.add_argument("--os", help="operating system (default linux)")
    g.add_argument("--arch", help="CPU architecture (default: this machine's)")
    g.add_argument("--variant", help="CPU variant, e.g. v7")
    g.add_argument("--allow-cross-arch", action="store_true",
                   help="let amd64 fall back to 386 and arm64 to arm when the index has no exact match")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; `only` (the command named on the command line): that command's parser
    alone, which reads its arguments, help and errors the same (the other 21 cost ~15 ms of
    every start)."""
    parser = _Parser(prog="registry-tools", description="Pin, pull, build and push OCI and Docker images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                help=argparse.SUPPRESS)
    for name, add in _COMMANDS.items():
        if only is None or only not in _COMMANDS or name == only:
            add(sub)
    teach(parser, sub)
    return parser


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
    _add_platform(p)
    _add_common(p)


def _export(sub: Any) -> None:
    p = sub.add_parser("export", help="an image's root filesystem as one tar (exportImage, podman export)",
                       description="Apply SOURCE's layers in order (whiteouts and opaque directories honoured) and "
                                   "write the root filesystem as one tar; its sha256 is printed, as pull's is. "
                                   "SOURCE: a registry reference pinned by digest, docker-archive:FILE, "
                                   "oci-archive:FILE, oci:DIR[:TAG] or an existing path.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the tar to write")
    _complete_platforms(p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                       help="the platform to take from an index (default: this machine's)"))
    _add_common(p)


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
    _add_platform(p)
    _add_common(p)


def _build(sub: Any) -> None:
    p = sub.add_parser("build", help="build a layered image from a JSON spec (buildLayeredImage)")
    p.add_argument("spec", metavar="SPEC.json", help="the build spec")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="ARCHIVE", help="write a docker-archive file")
    out.add_argument("--oci", metavar="DIR", help="write an OCI image layout directory")
    out.add_argument("--stream", action="store_true",
                     help="stream an uncompressed docker-archive to stdout (streamLayeredImage)")
    out.add_argument("--push", metavar="REF", help="push straight to a registry (no tarball is written)")
    p.add_argument("--format", choices=("docker-archive", "oci-archive"), default=None,
                   help="what -o writes (default docker-archive; a spec naming several platforms needs "
                        "oci-archive: a docker-archive holds one image)")
    _complete_platforms(p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                       help="build only this platform of a spec that names several"))
    p.add_argument("--sbom", metavar="FILE",
                   help="also write an SPDX 2.3 SBOM of the image (every store path of the closure with its name, "
                        "version and NAR hash; every plain path); with --push, attach it to the pushed image as a "
                        "referrer (application/spdx+json)")
    _add_common(p)


def _push(sub: Any) -> None:
    p = sub.add_parser("push", help="push a docker-archive, oci-archive or OCI layout to a registry")
    p.add_argument("source", help="an OCI layout directory (DIR or DIR:TAG), an oci-archive or a docker-archive")
    p.add_argument("dest", help="REGISTRY/REPOSITORY[:TAG]")
    p.add_argument("--annotation", action="append", metavar="KEY=VALUE",
                   help="an annotation on the manifest (or index) pushed, which makes it a new one (repeatable; "
                        "OCI manifests only; nothing is filled from the clock)")
    _add_common(p)


def _inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show what a reference points to (no layer is pulled)")
    p.add_argument("image", help="IMAGE[:TAG|@DIGEST]")
    p.add_argument("--raw", action="store_true", help="print the manifest bytes exactly as served")
    _add_platform(p)
    _add_common(p)


def _digest(sub: Any) -> None:
    p = sub.add_parser("digest", help="print the digest a reference resolves to")
    p.add_argument("image", help="IMAGE[:TAG|@DIGEST]")
    _add_platform(p)
    _add_common(p)


def _cache(sub: Any) -> None:
    p = sub.add_parser("cache", help="show, prune or clear the blob cache")
    p.add_argument("action", choices=("info", "prune", "clear"))
    p.add_argument("--max-size", metavar="SIZE", help="prune: keep at most this much (e.g. 20G, 500M)")
    p.add_argument("--older-than", metavar="DAYS", type=_days, help="prune: remove what was unused this long")
    p.add_argument("--cache-dir", help="the cache (default: $REGISTRY_TOOLS_CACHE or ~/.cache/registry-tools)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result")


def _login(sub: Any) -> None:
    p = sub.add_parser("login", help="check credentials against a registry and save them")
    p.add_argument("registry", help="registry host, e.g. ghcr.io or localhost:5000")
    p.add_argument("-u", "--username", help="user name (asked for if missing and on a terminal)")
    p.add_argument("-p", "--password", help="password (prefer --password-stdin: this one shows in ps)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--authfile", help="file to write (default: $REGISTRY_AUTH_FILE, else docker's config.json)")
    p.add_argument("--tls-verify", type=_bool, default=True, metavar="BOOL")
    p.add_argument("--ca-file")
    p.add_argument("--proxy", metavar="URL", help="an HTTP(S) proxy (default: from the environment)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    p.add_argument("--verbose", "-v", action="store_true")


def _logout(sub: Any) -> None:
    p = sub.add_parser("logout", help="remove a registry's saved credentials")
    p.add_argument("registry")
    p.add_argument("--authfile", help="file to change (default: $REGISTRY_AUTH_FILE, else docker's config.json)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result")


def _copy(sub: Any) -> None:
    p = sub.add_parser(
        "copy", help="copy an image between registries, archives and layouts (whole indexes)",
        description="Copy SRC to DEST. Each is a registry reference (docker://REF or REF; a DEST must name "
                    "its registry), or oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], "
                    "or an existing path. Between registries the whole index is copied, its digest kept; "
                    "blobs go straight from one registry to the other, unchanged and verified. The tag at "
                    "DEST: DEST's own, else SRC's, else none (by digest only), plus every --tag.")
    p.add_argument("source", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    _complete_platforms(p.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT],...",
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
    _add_common(p)


def _sync(sub: Any) -> None:
    p = sub.add_parser(
        "sync", help="mirror every image a lock pins to another registry, and write the mirror's lock",
        description="Copy exactly the digests LOCK pins (whole indexes) to REGISTRY[/PREFIX], keeping each "
                    "repository path under it (docker.io/library/alpine -> REGISTRY/PREFIX/library/alpine), "
                    "tagged as each entry's reference. The mirror's lock (the same pins, imageName changed; "
                    "every hash stays valid) goes to stdout or -o. An image already mirrored costs one HEAD.")
    p.add_argument("lock", metavar="LOCK", help="a JSON lock (prefetch --from FILE --json)")
    p.add_argument("--to", required=True, metavar="REGISTRY[/PREFIX]", help="where to mirror to")
    p.add_argument("-o", "--output", metavar="FILE", help="write the mirror's lock here (default: stdout)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; send nothing")
    p.add_argument("--keep-going", action="store_true",
                   help="on a failure, go on with the other images, then report every failure (exit non-zero)")
    _add_common(p)


def _index(sub: Any) -> None:
    p = sub.add_parser(
        "index", help="make an index of images, or add or remove platforms (in a registry or a layout)",
        description="Assemble a multi-arch index without a daemon. Each action writes a new index (entries sorted "
                    "by platform; nested indexes and attestations carried over unchanged), points the tag at it "
                    "and prints its digest. An index lives at REGISTRY/REPOSITORY[:TAG] or oci:DIR[:TAG] (default "
                    "tag latest); images from elsewhere are copied in by digest first.")
    actions = p.add_subparsers(dest="index_action", required=True, parser_class=_Parser, metavar="ACTION")
    c = actions.add_parser("create", help="a new index of these images (platforms read from each config)")
    c.add_argument("dest", metavar="DEST", help="REGISTRY/REPOSITORY[:TAG] or oci:DIR[:TAG]")
    c.add_argument("images", nargs="+", metavar="REF@DIGEST")
    a = actions.add_parser("add", help="put images into an existing index (replacing the entry of the same "
                                       "platform, if there is one)")
    a.add_argument("target", metavar="INDEX", help="REGISTRY/REPOSITORY[:TAG] or oci:DIR[:TAG]")
    a.add_argument("images", nargs="+", metavar="REF@DIGEST")
    for q in (c, a):
        q.add_argument("--annotation", action="append", metavar="KEY=VALUE",
                       help="an annotation on the index (repeatable); nothing is filled from the clock")
    r = actions.add_parser("remove", help="take platforms out of an existing index")
    r.add_argument("target", metavar="INDEX", help="REGISTRY/REPOSITORY[:TAG] or oci:DIR[:TAG]")
    _complete_platforms(r.add_argument("--platform", action="append", required=True, metavar="OS/ARCH[/VARIANT]",
                                       help="a platform to remove (repeatable or comma-separated)"))
    for q in (c, a, r):
        q.formatter_class = argparse.RawDescriptionHelpFormatter
        _add_common(q)


def _attach(sub: Any) -> None:
    p = sub.add_parser(
        "attach", help="attach files to an image as an OCI 1.1 artifact (signatures, SBOMs, reports)",
        description="Push an artifact manifest whose subject is the manifest REF names: artifactType T, the "
                    "empty config, one layer per FILE (titled with its name). Where the registry has no "
                    "referrers API, the artifact is added to the subject's fallback index (tag sha256-<hex>).")
    p.add_argument("image", metavar="REF", help="the image: REPOSITORY:TAG or REPOSITORY@DIGEST")
    p.add_argument("files", nargs="+", metavar="FILE[:MEDIATYPE]",
                   help="a file to attach (media type default application/octet-stream)")
    p.add_argument("--artifact-type", required=True, metavar="T", help="the artifact's type, e.g. "
                   "application/spdx+json")
    p.add_argument("--annotation", action="append", metavar="KEY=VALUE", help="an annotation on the artifact")
    _add_common(p)


def _referrers(sub: Any) -> None:
    p = sub.add_parser("referrers", help="list what refers to an image (signatures, SBOMs, attestations)",
                       description="List the manifests whose subject is the manifest REF names: from the "
                                   "registry's referrers API, else from the fallback tag sha256-<hex> (each entry "
                                   "checked: its own manifest must name that subject).")
    p.add_argument("image", metavar="REF")
    p.add_argument("--artifact-type", metavar="T", help="only artifacts of this type")
    _add_common(p)


def _generate_key(sub: Any) -> None:
    p = sub.add_parser("generate-key", help="make an ECDSA P-256 key pair for sign and verify",
                       description="Write PREFIX.key (mode 0600; cosign's ENCRYPTED COSIGN PRIVATE KEY, which cosign "
                                   "and skopeo --sign-by-sigstore-private-key sign with) under the passphrase from "
                                   "COSIGN_PASSWORD or asked twice, and PREFIX.pub. Existing files are never replaced.")
    p.add_argument("prefix", nargs="?", default="cosign", metavar="PREFIX", help="default: cosign")
    p.add_argument("--pkcs8", action="store_true", help="write PKCS#8 PEM instead (an empty passphrase: not "
                   "encrypted); sign reads it, cosign and skopeo do not")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result")


def _sign(sub: Any) -> None:
    p = sub.add_parser("sign", help="sign an image with a key (cosign's format, in the sha256-<hex>.sig tag)",
                       description="Sign the manifest REF names: a simple-signing payload naming the repository "
                                   "and the digest, signed with ECDSA P-256 (deterministic, RFC 6979), added to the "
                                   "signature manifest tagged sha256-<hex>.sig beside it (signatures there are "
                                   "kept). REF must name a manifest the registry has. The passphrase: "
                                   "COSIGN_PASSWORD, else asked on the terminal.")
    p.add_argument("image", metavar="REF")
    p.add_argument("--key", required=True, metavar="KEY", help="the private key (cosign's, or PKCS#8 PEM)")
    _add_common(p)


def _verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="check an image's cosign signatures against a public key",
                       description="Exit 0 only if a signature tagged sha256-<hex>.sig for the digest REF names is "
                                   "valid for KEY and its payload names that digest and repository; else one line "
                                   "saying what was found, exit 1. A signature manifest of more than 64 layers is "
                                   "refused, and a payload over 64 KiB is never downloaded.")
    p.add_argument("image", metavar="REF")
    p.add_argument("--key", required=True, metavar="KEY.pub", help="the public key (PEM)")
    _add_common(p)


def _tags(sub: Any) -> None:
    p = sub.add_parser("tags", help="list a repository's tags (every page)", description="Bounded: past 100,000 "
                       "tags, 32 MiB, 10,000 pages or a page read twice, one line and exit 1. Non-tags: left out.")
    p.add_argument("image", metavar="REPOSITORY")
    _add_common(p)


def _tag(sub: Any) -> None:
    p = sub.add_parser("tag", help="point a new tag at a manifest (one manifest PUT)")
    p.add_argument("image", metavar="SRC@DIGEST", help="the manifest (REPOSITORY@DIGEST, or :TAG)")
    p.add_argument("new_tag", metavar="NEWTAG", help="the tag to set, in the same repository")
    _add_common(p)


def _delete(sub: Any) -> None:
    p = sub.add_parser("delete", help="delete a manifest by digest, where the registry allows it")
    p.add_argument("image", metavar="REF@DIGEST")
    _add_common(p)


def _completion(sub: Any) -> None:
    p = sub.add_parser("completion", help="print the shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=("bash", "zsh", "fish"))


_COMMANDS = {"pull": _pull, "export": _export, "prefetch": _prefetch, "build": _build, "push": _push, "copy": _copy,
             "sync": _sync, "index": _index, "attach": _attach, "inspect": _inspect, "digest": _digest,
             "tags": _tags, "referrers": _referrers, "tag": _tag, "delete": _delete, "generate-key": _generate_key,
             "sign": _sign, "verify": _verify, "cache": _cache, "login": _login, "logout": _logout,
             "completion": _completion}
