"""generate-key, sign and verify: cosign's keys and signatures."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from registry_tools.cli.common import report, session_of
from registry_tools.cli.options import add_common
from registry_tools.words import count


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


def cmd_generate_key(args: argparse.Namespace) -> int:
    from registry_tools.api.sign import generate_key, passphrase

    key, pub = generate_key(args.prefix, passphrase(sys.stdin.isatty(), confirm=True), pkcs8=args.pkcs8)
    return report(args, {"privateKey": str(key), "publicKey": str(pub)}, f"wrote {key} (mode 0600) and {pub}",
                   pub)


def _sign(sub: Any) -> None:
    p = sub.add_parser("sign", help="sign an image with a key (cosign's format, in the sha256-<hex>.sig tag)",
                       description="Sign the manifest REF names: a simple-signing payload naming the repository "
                                   "and the digest, signed with ECDSA P-256 (deterministic, RFC 6979), added to the "
                                   "signature manifest tagged sha256-<hex>.sig beside it (signatures there are "
                                   "kept). REF must name a manifest the registry has. The passphrase: "
                                   "COSIGN_PASSWORD, else asked on the terminal.")
    p.add_argument("image", metavar="REF", help="the image to sign: REPOSITORY:TAG or REPOSITORY@DIGEST")
    p.add_argument("--key", required=True, metavar="KEY", help="the private key (cosign's, or PKCS#8 PEM)")
    add_common(p)


def cmd_sign(args: argparse.Namespace) -> int:
    from registry_tools.api.sign import key_passphrase, sign
    from registry_tools.endpoint import written_reference

    written_reference(args.image)  # a REF naming no registry is refused before a passphrase is asked
    secret = key_passphrase(args.key, sys.stdin.isatty())
    with session_of(args) as session:
        r = sign(args.image, args.key, secret, session=session)
    return report(args, r.to_json(),
                  f"signed {r.reference}: {count(r.signatures, 'signature')} in {r.signature_digest}",
                  r.signature_digest)


def _verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="check an image's cosign signatures against a public key",
                       description="Exit 0 only if a signature tagged sha256-<hex>.sig for the digest REF names is "
                                   "valid for KEY and its payload names that digest and repository; else one line "
                                   "saying what was found, exit 1. A signature manifest of more than 64 layers is "
                                   "refused, and a payload over 64 KiB is never downloaded.")
    p.add_argument("image", metavar="REF", help="the image to check: REPOSITORY:TAG or REPOSITORY@DIGEST")
    p.add_argument("--key", required=True, metavar="KEY.pub", help="the public key (PEM)")
    add_common(p)


def cmd_verify(args: argparse.Namespace) -> int:
    from registry_tools.api.sign import verify

    with session_of(args) as session:
        r = verify(args.image, args.key, session=session)
    return report(args, r.to_json(), f"{r.reference}: {count(r.verified, 'valid signature')} by {args.key}",
                   r.digest)


COMMANDS = {
    "generate-key": (_generate_key, cmd_generate_key),
    "sign": (_sign, cmd_sign),
    "verify": (_verify, cmd_verify),
}
