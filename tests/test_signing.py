"""sign, verify, generate-key and pull --verify-key: cosign's format, checked against upstream
skopeo 1.9.3 (sigstore enabled) both ways; every refusal named."""
from __future__ import annotations

import base64
import hashlib
import json
import lzma
import os
import stat
import subprocess
from pathlib import Path

import pytest

from registry_tools.model import signature as sg
from registry_tools.registry.client import Registry

from .helpers import run

# ../shared/tools beside the checkout (this repository's CI); REGISTRY_TOOLS_SHARED names another place
_SHARED = [Path(os.environ["REGISTRY_TOOLS_SHARED"])] if os.environ.get("REGISTRY_TOOLS_SHARED") else []
_SHARED += [Path(__file__).resolve().parents[2] / "shared", Path("/work/shared")]
SKOPEO_XZ = next((p / "tools" / "skopeo-1.9.3-sigstore.xz" for p in _SHARED
                  if (p / "tools" / "skopeo-1.9.3-sigstore.xz").exists()),
                 _SHARED[0] / "tools" / "skopeo-1.9.3-sigstore.xz")
SKOPEO_SHA256 = "a3c8c131389de1f75b7d6fbbf217ebdc586a64efcb1409b091fcbfed47aa45eb"


@pytest.fixture
def keys(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COSIGN_PASSWORD", "correct horse")
    code, out, err = run(capsys, "generate-key", str(tmp_path / "release"), "--json")
    assert code == 0, err
    code, _, err = run(capsys, "generate-key", str(tmp_path / "other"))
    assert code == 0, err
    return tmp_path / "release.key", tmp_path / "release.pub", tmp_path / "other.pub"


def seed(registry, target, facts, capsys, name="single-gzip", repo="app/img:1") -> str:
    assert run(capsys, "copy", f"{registry.host}/test/{name}:v1", f"{target.host}/{repo}")[0] == 0
    return facts[name]["manifest"]


def test_generate_key_writes_an_encrypted_key_0600_and_never_replaces(keys, tmp_path, capsys):
    key, pub, _ = keys
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    code, _, err = run(capsys, "generate-key", str(tmp_path / "release"))
    assert code == 2 and "exists" in err


def test_sign_then_verify_and_each_refusal(registry, target, facts, keys, cache_dir, tmp_path, capsys, monkeypatch):
    key, pub, other_pub = keys
    subject = seed(registry, target, facts, capsys)
    ref = f"{target.host}/app/img:1"
    code, _, err = run(capsys, "verify", ref, "--key", str(pub))
    assert code == 1 and "no signature" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "sign", ref, "--key", str(key), "--json")
    assert code == 0, err
    signed = json.loads(out)
    assert signed["digest"] == subject and signed["signatures"] == 1
    code, out, err = run(capsys, "verify", ref, "--key", str(pub), "--json")
    assert code == 0 and json.loads(out)["verified"] == 1, err
    from .test_multiarch import check_schema

    check_schema(json.loads(out), "verify")
    check_schema(signed, "sign")
    # deterministic (RFC 6979): signing again changes nothing
    code, out, _ = run(capsys, "sign", ref, "--key", str(key), "--json")
    assert json.loads(out)["signatureDigest"] == signed["signatureDigest"]
    # another key
    code, _, err = run(capsys, "verify", ref, "--key", str(other_pub))
    assert code == 1 and "not signed by this key" in err
    # the signature manifest of this image, tagged for another image: refused (it signs another digest)
    other = seed(registry, target, facts, capsys, "single-zstd", "app/img:2")
    reg = Registry(target.host)
    try:
        raw, _ = reg.get_manifest("app/img", f"sha256-{subject.split(':')[1]}.sig")
        reg.put_manifest("app/img", f"sha256-{other.split(':')[1]}.sig", raw, "application/vnd.oci.image.manifest.v1+json")
        code, _, err = run(capsys, "verify", f"{target.host}/app/img:2", "--key", str(pub))
        assert code == 1 and f"signs {subject}, not {other}" in err
        # a tampered payload (another digest in it) under the original signature: refused
        doc = json.loads(raw)
        good = reg_blob(target, doc["layers"][0]["digest"])
        forged = good.replace(subject.encode(), other.encode())
        layer = dict(doc["layers"][0], digest="sha256:" + hashlib.sha256(forged).hexdigest(), size=len(forged))
        push_blob(reg, forged)
        put_sig(reg, other, [layer])
        code, _, err = run(capsys, "verify", f"{target.host}/app/img:2", "--key", str(pub))
        assert code == 1 and "not signed by this key (or altered)" in err
        # a payload that is not JSON, validly signed: refused, never "verified"
        k = sg.load_private(key.read_bytes(), b"correct horse", "key")
        junk = b"not json at all"
        push_blob(reg, junk)
        put_sig(reg, other, [sg.signature_layer(junk, sg.sign(k, junk))])
        code, _, err = run(capsys, "verify", f"{target.host}/app/img:2", "--key", str(pub))
        assert code == 1 and "not valid JSON" in err
    finally:
        reg.close()
    # the same image in another repository, the signature copied beside it: it names the first repository
    sig_tag = f"sha256-{subject.split(':')[1]}.sig"
    seed(registry, target, facts, capsys, repo="elsewhere/img:1")
    assert run(capsys, "copy", f"{target.host}/app/img:{sig_tag}", f"{target.host}/elsewhere/img:{sig_tag}")[0] == 0
    code, _, err = run(capsys, "verify", f"{target.host}/elsewhere/img:1", "--key", str(pub))
    assert code == 1 and f"signs the repository {target.host}/app/img" in err
    # bad keys: not a key, a wrong passphrase
    (tmp_path / "junk.pub").write_text("hello\n")
    code, _, err = run(capsys, "verify", ref, "--key", str(tmp_path / "junk.pub"))
    assert code == 2 and "not a PEM public key" in err
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong")
    code, _, err = run(capsys, "sign", ref, "--key", str(key))
    assert code == 2 and "wrong passphrase" in err


def reg_blob(target, digest: str) -> bytes:
    return subprocess.run(["curl", "-sf", f"http://{target.host}/v2/app/img/blobs/{digest}"], capture_output=True,
                          check=True).stdout


def push_blob(reg: Registry, data: bytes) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp = reg.request("POST", "app/img", "/v2/app/img/blobs/uploads/", actions="pull,push")
    assert resp.status_code == 202, resp.status_code
    location = resp.headers["location"]
    url = location if location.startswith("http") else f"{reg.base_url()}{location}"
    resp = reg.request("PUT", "app/img", f"{url}{'&' if '?' in url else '?'}digest={digest}", actions="pull,push",
                       content=data, headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 201, resp.status_code


def put_sig(reg: Registry, subject: str, layers: list[dict]) -> None:
    config, raw = sg.signature_manifest(layers)
    push_blob(reg, config)
    reg.put_manifest("app/img", f"sha256-{subject.split(':')[1]}.sig", raw, "application/vnd.oci.image.manifest.v1+json")


def test_pull_verify_key_writes_nothing_without_a_valid_signature(registry, target, facts, keys, cache_dir,
                                                                   tmp_path, capsys):
    key, pub, other_pub = keys
    subject = seed(registry, target, facts, capsys)
    pinned = f"{target.host}/app/img@{subject}"
    out = tmp_path / "img.tar"
    code, _, err = run(capsys, "pull", pinned, "--verify-key", str(pub), "-o", str(out))
    assert code == 1 and "no valid signature" in err and not out.exists()
    assert run(capsys, "sign", pinned, "--key", str(key))[0] == 0
    code, _, err = run(capsys, "pull", pinned, "--verify-key", str(other_pub), "-o", str(out))
    assert code == 1 and not out.exists()
    code, _, err = run(capsys, "pull", pinned, "--verify-key", str(pub), "-o", str(out))
    assert code == 0 and out.exists(), err


# --- interop with upstream skopeo 1.9.3 (sigstore enabled) ------------------------------------

@pytest.fixture
def skopeo(tmp_path) -> str:
    if not SKOPEO_XZ.exists():
        pytest.skip(f"{SKOPEO_XZ} is absent (a clone outside this repository's CI): no sigstore-enabled skopeo")
    data = lzma.decompress(SKOPEO_XZ.read_bytes())
    assert hashlib.sha256(data).hexdigest() == SKOPEO_SHA256
    path = tmp_path / "skopeo-sigstore"
    path.write_bytes(data)
    path.chmod(0o755)
    return str(path)


def skopeo_config(tmp_path, host: str, pub: Path, accept: str = "") -> list[str]:
    docker = {host: [{"type": "sigstoreSigned", "keyPath": str(pub), "signedIdentity": {"type": "matchRepository"}}]}
    if accept:
        docker[accept] = [{"type": "insecureAcceptAnything"}]
    policy = {"default": [{"type": "reject"}],
              "transports": {"docker": docker, "dir": {"": [{"type": "insecureAcceptAnything"}]}}}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    regd = tmp_path / "registries.d"
    regd.mkdir(exist_ok=True)
    (regd / "local.yaml").write_text(f"docker:\n  {host}:\n    use-sigstore-attachments: true\n")
    return ["--policy", str(tmp_path / "policy.json"), "--registries.d", str(regd)]


def cosign_key(path: Path, password: bytes) -> Path:
    """A key in cosign's encrypted format (scrypt, then NaCl secretbox), as skopeo 1.9 reads it."""
    import nacl.secret
    from cryptography.hazmat.primitives import serialization

    k = sg.generate()
    der = k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    salt, nonce = os.urandom(32), os.urandom(24)
    secret = hashlib.scrypt(password, salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=256 << 20)
    box = nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext
    doc = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(box).decode()}
    body = base64.b64encode(json.dumps(doc).encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    path.write_text("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n" + "\n".join(lines) +
                    "\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n")
    pub = path.with_suffix(".pub")
    pub.write_bytes(sg.public_pem(k.public_key()))
    return pub


def test_skopeo_verifies_what_sign_wrote(registry, target, facts, keys, skopeo, cache_dir, tmp_path, capsys):
    key, pub, other_pub = keys
    seed(registry, target, facts, capsys)
    ref = f"{target.host}/app/img:1"
    assert run(capsys, "sign", ref, "--key", str(key))[0] == 0
    args = skopeo_config(tmp_path, target.host, pub)
    res = subprocess.run([skopeo, *args, "copy", "--quiet", "--src-tls-verify=false", "--remove-signatures",
                          f"docker://{ref}", f"dir:{tmp_path / 'ok'}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    args = skopeo_config(tmp_path, target.host, other_pub)
    res = subprocess.run([skopeo, *args, "copy", "--quiet", "--src-tls-verify=false", "--remove-signatures",
                          f"docker://{ref}", f"dir:{tmp_path / 'no'}"], capture_output=True, text=True)
    assert res.returncode != 0 and "signature" in res.stderr.lower()


def test_verify_accepts_what_skopeo_signed(registry, target, facts, skopeo, cache_dir, tmp_path, capsys):
    pub = cosign_key(tmp_path / "cosign.key", b"skopeo pass")
    (tmp_path / "pass").write_text("skopeo pass")
    args = skopeo_config(tmp_path, target.host, pub, accept=registry.host)
    res = subprocess.run([skopeo, *args, "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                          "--sign-by-sigstore-private-key", str(tmp_path / "cosign.key"),
                          "--sign-passphrase-file", str(tmp_path / "pass"),
                          f"docker://{registry.host}/test/single-gzip:v1", f"docker://{target.host}/app/signed:1"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    code, out, err = run(capsys, "verify", f"{target.host}/app/signed:1", "--key", str(pub), "--json")
    assert code == 0 and json.loads(out)["verified"] == 1, err
    # and our sign reads the cosign key too
    os.environ["COSIGN_PASSWORD"] = "skopeo pass"
    try:
        code, out, err = run(capsys, "sign", f"{target.host}/app/signed:1", "--key", str(tmp_path / "cosign.key"),
                             "--json")
    finally:
        del os.environ["COSIGN_PASSWORD"]
    assert code == 0 and json.loads(out)["signatures"] == 2, err
