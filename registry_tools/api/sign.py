"""sign, verify and generate-key: cosign-compatible signatures in the `sha256-<hex>.sig` tag.

`sign` adds a signature (a payload naming the repository and the digest, and its ECDSA
signature) to the signature manifest beside the image, keeping the signatures already
there; `verify` accepts an image only when one of those signatures is valid for the key,
its payload names this digest and this repository, and every byte read was verified
against its digest. A tampered payload, another key, a signature for another digest and
an unsigned image are each refused, with what was found.

Only what the registry has is signed (a digest is looked up first). Reading the signatures
already there is bounded: at most `MAX_SIGNATURES` layers, and a payload is downloaded
only when its descriptor says it is within `MAX_PAYLOAD` (the download bounded by that
size and verified against its digest).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from registry_tools import endpoint
from registry_tools.errors import ManifestError, NotFound, UsageError, VerificationError
from registry_tools.fileio import replacing
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model import signature as sg
from registry_tools.model.digest import Digest, verify_bytes
from registry_tools.registry.sink import RegistrySink
from registry_tools.registry.source import RegistrySource
from registry_tools.session import Session, using

log = logging.getLogger("registry_tools.sign")
PASSWORD_ENV = "COSIGN_PASSWORD"


class SignatureInvalid(VerificationError):
    """No valid signature by the key for the image."""


def passphrase(prompt: bool, confirm: bool = False) -> bytes:
    """From COSIGN_PASSWORD, else asked on the terminal (twice when making a key)."""
    value = os.environ.get(PASSWORD_ENV)
    if value is not None:
        return value.encode()
    if not prompt:
        raise UsageError(f"the key's passphrase: set {PASSWORD_ENV} (empty for none) or run on a terminal")
    import getpass

    first = getpass.getpass("passphrase for the key: ")
    if confirm and getpass.getpass("again: ") != first:
        raise UsageError("the passphrases differ")
    return first.encode()


def generate_key(prefix: str | os.PathLike[str], secret: bytes, *, pkcs8: bool = False) -> tuple[Path, Path]:
    """PREFIX.key (mode 0600; cosign's encrypted format, or PKCS#8 PEM with `pkcs8`, encrypted with
    `secret`) and PREFIX.pub; existing files are not replaced."""
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (key_path, pub_path):
        if os.path.lexists(p):
            raise UsageError(f"{p} exists; not replacing a key")
    key = sg.generate()
    private = sg.pkcs8_pem(key, secret) if pkcs8 else sg.cosign_pem(key, secret)
    for path, data, mode in ((key_path, private, 0o600), (pub_path, sg.public_pem(key.public_key()), 0o644)):
        with replacing(path, mode) as f:  # made 0600 (mkstemp), given its mode once whole
            f.write(data)
    return key_path, pub_path


def key_bytes(path: str | os.PathLike[str]) -> bytes:
    return _read(path, "key")


def key_passphrase(path: str | os.PathLike[str], prompt: bool) -> bytes:
    """The passphrase the private key at `path` needs, asked only when it needs one (and only once
    the key is found): none for a PEM key that is not encrypted, unless COSIGN_PASSWORD gives one."""
    if os.environ.get(PASSWORD_ENV) is None and not sg.needs_passphrase(key_bytes(path)):
        return b""
    return passphrase(prompt)


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} {p} is not a file")
    if p.stat().st_size > 64 << 10:
        raise sg.KeyError_(f"{p}: too large to be a key")
    return p.read_bytes()


def _target(ref: refs.Reference, session: Session) -> tuple[refs.Reference, RegistrySource, Digest]:
    """The repository and the digest REF names, which the registry must have: a tag is resolved,
    a digest fetched (from the registry, not the cache) and checked."""
    source = session.source(ref.name_only())
    if not ref.digest:
        return ref, source, source.resolve_tag(ref.tag or "latest")
    digest = Digest.parse(ref.digest)
    raw, _ = source.registry.get_manifest(source.repo, str(digest))
    verify_bytes(f"manifest {ref.name_only()}@{digest}", raw, digest)
    return ref, source, digest


@dataclass
class SignResult:
    reference: str
    digest: Digest
    signature_digest: Digest  # the signature manifest's
    signatures: int  # in it now

    def to_json(self) -> dict[str, object]:
        return {"reference": self.reference, "digest": str(self.digest),
                "signatureDigest": str(self.signature_digest), "signatures": self.signatures}


def _existing_layers(source: RegistrySource, tag: str, actions: str) -> list[mf.Descriptor]:
    """The signature layers already tagged for the digest, at most MAX_SIGNATURES; each payload whose
    descriptor is within MAX_PAYLOAD fetched, verified, into the cache, and no other. `actions`: the
    token scope asked for ("pull" to verify: read-only credentials suffice)."""
    digest = source.registry.manifest_digest(source.repo, tag, actions)
    if digest is None:
        return []
    where = f"{source.registry.domain}/{source.repo}:{tag}"
    raw, _ = source.manifest_bytes(digest)
    doc = mf.load_json(raw, f"signature manifest {where}")
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise ManifestError(f"{where} is not a signature manifest")
    if len(layers) > sg.MAX_SIGNATURES:
        raise ManifestError(f"{where}: {len(layers)} signature layers, over the limit of {sg.MAX_SIGNATURES}")
    out = [mf.Descriptor.from_json(layer, f"signature manifest {where}") for layer in layers]
    for desc in out:
        if desc.size <= sg.MAX_PAYLOAD:
            source.fetch_blob(desc, f"signature payload {desc.digest}")
    return out


def _too_large(desc: mf.Descriptor) -> str:
    return f"{desc.digest}: a payload of {desc.size} bytes, over the limit of {sg.MAX_PAYLOAD}"


def sign(image: str, key_file: str | os.PathLike[str], secret: bytes, *, session: Session | None = None) -> SignResult:
    """`sign REF --key KEY`: a signature of the manifest REF names, added beside it."""
    key = sg.load_private(_read(key_file, "key"), secret, str(key_file))
    with using(session) as session:
        ref, source, digest = _target(endpoint.written_reference(image), session)
        data = sg.payload(ref.name_only().name, digest)
        layer = sg.signature_layer(data, sg.sign(key, data))
        tag = sg.signature_tag(digest)
        where = f"{ref.name_only()}:{tag}"
        existing = _existing_layers(source, tag, "pull,push")
        for desc in existing:
            if desc.size > sg.MAX_PAYLOAD:
                raise ManifestError(f"{where}: {_too_large(desc)}; not signing beside it")
        layers = [x for x in (d.raw for d in existing) if x != layer] + [layer]
        if len(layers) > sg.MAX_SIGNATURES:
            raise ManifestError(f"{where} holds {len(layers) - 1} signatures already, the limit of "
                                f"{sg.MAX_SIGNATURES}")
        config, raw = sg.signature_manifest(layers)
        cache = session.cache
        cache.put_bytes(Digest.of_bytes(data), data)
        cache.put_bytes(Digest.of_bytes(config), config)
        sink = RegistrySink(session, ref.name_only())
        ok = False
        try:
            for blob in [*layers, mf.load_json(raw, "signature manifest")["config"]]:
                sink.submit(mf.Descriptor.from_json(blob, "signature manifest"))
            sink.wait()
            signature_digest = sink.put_manifest(raw, mf.OCI_MANIFEST, tag)
            ok = True
        finally:
            sink.close(ok)
        return SignResult(f"{ref.name_only()}@{digest}", digest, signature_digest, len(layers))


@dataclass
class VerifyResult:
    reference: str
    digest: Digest
    verified: int = 0  # valid signatures by the key
    refused: list[str] = field(default_factory=list)  # why the others were not

    def to_json(self) -> dict[str, object]:
        return {"reference": self.reference, "digest": str(self.digest), "verified": self.verified,
                "refused": self.refused}


def _same_repository(claimed: str, repository: str) -> bool:
    try:
        return refs.parse_normalized(claimed).name_only().name == repository
    except UsageError:
        return False


def check_signatures(source: RegistrySource, digest: Digest, key_data: bytes, key_where: str) -> VerifyResult:
    """Every signature tagged for `digest`, checked; raises SignatureInvalid unless one is valid."""
    key = sg.load_public(key_data, key_where)
    repository = refs.parse_normalized(f"{source.registry.domain}/{source.repo}").name
    result = VerifyResult(f"{repository}@{digest}", digest)
    tag = sg.signature_tag(digest)
    try:
        layers = _existing_layers(source, tag, "pull")
    except NotFound:
        layers = []
    for desc in layers:
        signature = desc.annotations.get(sg.SIGNATURE_ANNOTATION)
        if desc.media_type != sg.PAYLOAD_TYPE or not signature:
            result.refused.append(f"{desc.digest}: not a cosign signature layer")
            continue
        if desc.size > sg.MAX_PAYLOAD:  # never downloaded
            result.refused.append(_too_large(desc))
            continue
        data = source.store.cache.read_small(desc, f"signature payload {desc.digest}")
        if not sg.check(key, data, signature):
            result.refused.append(f"{desc.digest}: not signed by this key (or altered)")
            continue
        try:
            claim = sg.read_payload(data, f"signature payload {desc.digest}")
        except ManifestError as e:
            result.refused.append(str(e))
            continue
        if claim.digest != str(digest):
            result.refused.append(f"{desc.digest}: signs {claim.digest}, not {digest}")
        elif not _same_repository(claim.repository, repository):
            result.refused.append(f"{desc.digest}: signs the repository {claim.repository}")
        else:
            result.verified += 1
    if not result.verified:
        why = "; ".join(result.refused[:3]) if result.refused else f"no signature (no tag {tag})"
        raise SignatureInvalid(f"{result.reference}: no valid signature by {key_where}: {why}")
    return result


def verify(image: str, key_file: str | os.PathLike[str], *, session: Session | None = None) -> VerifyResult:
    """`verify REF --key KEY.pub`."""
    key_data = _read(key_file, "key")
    with using(session) as session:
        _, source, digest = _target(refs.parse_normalized(image), session)
        return check_signatures(source, digest, key_data, str(key_file))
