"""Cosign-compatible signatures: keys, the simple-signing payload, and the signature manifest.

A signature is ECDSA P-256 over SHA-256 of the payload, DER-encoded and base64'd in the
layer annotation `dev.cosignproject.cosign/signature`; the payload is the simple-signing
JSON naming the repository and the manifest digest; both live in the manifest tagged
`sha256-<hex>.sig` beside the image, as cosign and containers/image write and read them.
Signing is deterministic (RFC 6979), so signing the same digest with the same key gives
the same signature and the same signature manifest.

Keys: cosign's `ENCRYPTED COSIGN PRIVATE KEY` (the PKCS#8 DER of the key, sealed with NaCl
secretbox under a key scrypt derives from the passphrase, N=32768 r=8 p=1, as cosign and
skopeo 1.9 write and read it), written by default and read with cosign 2's label `ENCRYPTED
SIGSTORE PRIVATE KEY` too; PKCS#8 PEM (OpenSSL's), encrypted or not, on request and read.
Public keys are PEM SubjectPublicKeyInfo, as cosign's.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
import nacl.exceptions
import nacl.secret
import nacl.utils

from registry_tools.errors import UsageError
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
COSIGN_PEM = "ENCRYPTED COSIGN PRIVATE KEY"
SIGSTORE_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"  # cosign 2's label for the same format
SCRYPT = {"N": 32768, "r": 8, "p": 1}  # what cosign writes
MAX_PAYLOAD = 64 << 10  # bytes of one signature payload
MAX_SIGNATURES = 64  # layers of one signature manifest
_PEM_LABEL = re.compile(rb"^-----BEGIN ([A-Z0-9 ]+)-----\r?$", re.MULTILINE)


class KeyError_(UsageError):
    """A key file that is not a usable key (or a wrong passphrase)."""


def signature_tag(digest: Digest) -> str:
    return f"{digest.algorithm}-{digest.hex}.sig"


def generate() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def cosign_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """cosign's encrypted key: the PKCS#8 DER in a NaCl secretbox (random nonce) under the key scrypt
    derives from the passphrase and a random salt; always encrypted (with an empty passphrase too)."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt = nacl.utils.random(32)
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, SCRYPT["N"], SCRYPT["r"], SCRYPT["p"])).encrypt(der)
    doc = {"kdf": {"name": "scrypt", "params": SCRYPT, "salt": _b64(salt)},
           "cipher": {"name": "nacl/secretbox", "nonce": _b64(box.nonce)},
           "ciphertext": _b64(box.ciphertext)}
    body = _b64(json.dumps(doc, separators=(",", ":")).encode())
    lines = "".join(body[i:i + 64] + "\n" for i in range(0, len(body), 64))
    return f"-----BEGIN {COSIGN_PEM}-----\n{lines}-----END {COSIGN_PEM}-----\n".encode()


def pkcs8_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    """PKCS#8 PEM, encrypted with the passphrase (not encrypted when it is empty)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 << 20)


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _p256(key: Any, where: str) -> Any:
    curve = getattr(key, "curve", None)
    if not isinstance(curve, ec.SECP256R1):
        raise KeyError_(f"{where}: not an ECDSA P-256 key (cosign keys are)")
    return key


def _label(data: bytes) -> str:
    label = _PEM_LABEL.search(data)
    return label.group(1).decode() if label else ""


def needs_passphrase(data: bytes) -> bool:
    """Whether a private key is sealed under a passphrase (cosign's always is, if only the empty
    one): told by its PEM label, so that a key that is not is never asked one."""
    kind = _label(data)
    return kind in (COSIGN_PEM, SIGSTORE_PEM, "ENCRYPTED PRIVATE KEY") or \
        (kind.endswith("PRIVATE KEY") and b"Proc-Type: 4,ENCRYPTED" in data)


def load_private(data: bytes, passphrase: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    """cosign's encrypted key or a PKCS#8 (or SEC 1) PEM: told apart by the PEM label, never by
    the text of an error."""
    kind = _label(data)
    if kind in (COSIGN_PEM, SIGSTORE_PEM):
        return _p256(_load_cosign(data, passphrase, where), where)
    if not kind.endswith("PRIVATE KEY"):
        raise KeyError_(f"{where}: not a PEM private key")
    encrypted = needs_passphrase(data)
    if encrypted and not passphrase:
        raise KeyError_(f"{where}: the key is encrypted: give its passphrase (COSIGN_PASSWORD)")
    if passphrase and not encrypted:
        raise KeyError_(f"{where}: the key is not encrypted; give no passphrase")
    try:
        key = serialization.load_pem_private_key(data, passphrase or None)
    except (TypeError, ValueError):
        # PKCS#8 encryption has no integrity check: a wrong passphrase can decrypt to bytes that only
        # fail to parse, so for an encrypted key any failure is a wrong passphrase (or damage).
        raise KeyError_(f"{where}: wrong passphrase (or a damaged key)" if encrypted
                        else f"{where}: not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyError_(f"{where}: not an ECDSA key")
    return _p256(key, where)


def _load_cosign(data: bytes, passphrase: bytes, where: str) -> Any:
    """scrypt, then NaCl secretbox, whose authenticator tells a wrong passphrase every time."""
    try:
        body = b"".join(line for line in data.strip().splitlines() if not line.startswith(b"-----"))
        doc = json.loads(base64.b64decode(body))
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise KeyError_(f"{where}: a cosign key with an unknown kdf or cipher")
        p = kdf["params"]
        if not (isinstance(p["N"], int) and 2 <= p["N"] <= 1 << 20 and 0 < p["r"] <= 16 and 0 < p["p"] <= 16):
            raise KeyError_(f"{where}: a cosign key with scrypt parameters out of range")
        secret = _scrypt(passphrase, base64.b64decode(kdf["salt"]), p["N"], p["r"], p["p"])
        der = nacl.secret.SecretBox(secret).decrypt(base64.b64decode(doc["ciphertext"]),
                                                     base64.b64decode(cipher["nonce"]))
    except (KeyError, TypeError, ValueError) as e:  # PyNaCl's ValueError (a bad nonce's length) too
        raise KeyError_(f"{where}: not a cosign key ({type(e).__name__})") from None
    except nacl.exceptions.CryptoError:  # the authenticator did not match
        raise KeyError_(f"{where}: wrong passphrase") from None
    try:
        return serialization.load_der_private_key(der, None)
    except ValueError:
        raise KeyError_(f"{where}: not a cosign key") from None


def load_public(data: bytes, where: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyError_(f"{where}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyError_(f"{where}: not an ECDSA public key")
    return _p256(key, where)  # type: ignore[no-any-return]


# --- the payload and the signature manifest ----------------------------------------------------

def payload(repository: str, digest: Digest) -> bytes:
    """The simple-signing payload cosign writes (keys in its order, compact)."""
    return json.dumps({"critical": {"identity": {"docker-reference": repository},
                                    "image": {"docker-manifest-digest": str(digest)},
                                    "type": SIGNATURE_TYPE},
                       "optional": None}, separators=(",", ":")).encode()


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))).decode()


def check(key: ec.EllipticCurvePublicKey, data: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Claim:
    repository: str
    digest: str


def read_payload(data: bytes, where: str) -> Claim:
    """The payload's claims, type-checked (a payload that is not simple signing is refused)."""
    doc = mf.load_json(data, where)
    try:
        critical = doc["critical"]
        kind, ref, digest = (critical["type"], critical["identity"]["docker-reference"],
                             critical["image"]["docker-manifest-digest"])
    except (KeyError, TypeError):
        raise mf.ManifestError(f"{where}: not a simple-signing payload") from None
    if kind != SIGNATURE_TYPE or not isinstance(ref, str) or not isinstance(digest, str):
        raise mf.ManifestError(f"{where}: not a cosign container image signature")
    return Claim(ref, digest)


def signature_manifest(layers: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    """(config, manifest) of a signature image whose layers are payloads with their signatures."""
    config = json.dumps({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                         "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}},
                        separators=(",", ":")).encode()
    doc = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
           "config": {"mediaType": mf.OCI_CONFIG, "size": len(config), "digest": str(Digest.of_bytes(config))},
           "layers": layers}
    return config, mf.canonical_json(doc)


def signature_layer(data: bytes, signature: str) -> dict[str, Any]:
    return {"mediaType": PAYLOAD_TYPE, "size": len(data), "digest": str(Digest.of_bytes(data)),
            "annotations": {SIGNATURE_ANNOTATION: signature}}
