"""Credentials and tokens against real registries: htpasswd, and token auth with our own token server."""
from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry_tools import cli
from registry_tools.registry.credentials import CredentialStore, helper_server_url
from registry_tools.session import Session

from .support.registry import require_tools as _require
from .helpers import IMAGES
from .support.registry import LocalRegistry, skopeo_push_layout
from .support.tokenserver import Policy, TokenServer, htpasswd_config

ALICE_PW = "wonder-Land-42!"
READER_PW = "only-reads-7"
IDENTITY = "idtok-3f9a1c77e2b54d0e"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def digest_of(facts):
    return facts["single-gzip"]["manifest"]


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    _require("docker-registry", "skopeo", "htpasswd")
    root = tmp_path_factory.mktemp("basic")
    reg = LocalRegistry(root / "reg", extra_config=htpasswd_config(root / "htpasswd", {"alice": ALICE_PW})).start()
    try:
        skopeo_push_layout(IMAGES / "single-gzip", "v1", f"{reg.host}/team/app:v1", all_images=False,
                           creds=f"alice:{ALICE_PW}")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def token_setup(tmp_path_factory):
    _require("docker-registry", "skopeo")
    root = tmp_path_factory.mktemp("token")
    policy = Policy(
        passwords={"alice": ALICE_PW, "reader": READER_PW, "bob": "bobs-pw"},
        identity_tokens={IDENTITY: "alice"},
        grants={"alice": {"private/": ["pull", "push"], "public/": ["pull", "push"]},
                "reader": {"private/": ["pull"]}, "bob": {}},
        anonymous={"public/": ["pull"]},
    )
    server = TokenServer(root / "tokens", policy)
    reg = LocalRegistry(root / "reg", extra_config=server.registry_config()).start()
    try:
        for repo in ("private/app", "public/app"):
            skopeo_push_layout(IMAGES / "single-gzip", "v1", f"{reg.host}/{repo}:v1", all_images=False,
                               creds=f"alice:{ALICE_PW}")
        yield reg, server, policy
    finally:
        reg.stop()
        server.stop()


@pytest.fixture
def clean_env(monkeypatch, tmp_path, cache_dir):
    """No credentials from the machine: every auth file location points into the test's directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return tmp_path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def pull(ref: str, out: Path, *extra: str) -> tuple[int, str]:
    code = cli.main(["pull", ref, "-o", str(out), "-q", *extra])
    return code


# --- htpasswd (Basic) -------------------------------------------------------------------

def test_basic_auth_from_docker_config(basic_registry, facts, clean_env, capsys):
    write_json(clean_env / "docker" / "config.json", {"auths": {basic_registry.host: {"auth": b64(f"alice:{ALICE_PW}")}}})
    code = pull(f"{basic_registry.host}/team/app@{digest_of(facts)}", clean_env / "x.tar")
    assert code == 0, capsys.readouterr().err


def test_basic_auth_wrong_password(basic_registry, facts, clean_env, capsys):
    code = pull(f"{basic_registry.host}/team/app@{digest_of(facts)}", clean_env / "x.tar", "--creds", "alice:nope-nope")
    err = capsys.readouterr().err
    assert code == 1
    assert "access denied" in err and "check the credentials" in err and "nope-nope" not in err
    # the image named as the user wrote it: by digest, with '@'
    assert f"{basic_registry.host}/team/app@{digest_of(facts)}" in err and ":sha256:" not in err
    assert len(err.strip().splitlines()) == 1 and not (clean_env / "x.tar").exists()


def test_basic_auth_missing_credentials(basic_registry, facts, clean_env, capsys):
    code = pull(f"{basic_registry.host}/team/app@{digest_of(facts)}", clean_env / "x.tar")
    err = capsys.readouterr().err
    assert code == 1 and "registry-tools login" in err


def test_login_and_logout(basic_registry, facts, clean_env, capsys, monkeypatch):
    authfile = clean_env / "auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(authfile))
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("wrong-password\n"))
    assert cli.main(["login", basic_registry.host, "-u", "alice", "--password-stdin"]) == 1
    assert not authfile.exists()  # a failed login writes nothing
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(ALICE_PW + "\n"))
    assert cli.main(["login", basic_registry.host, "-u", "alice", "--password-stdin"]) == 0
    saved = json.loads(authfile.read_text())
    assert saved["auths"][basic_registry.host]["auth"] == b64(f"alice:{ALICE_PW}")
    assert stat.S_IMODE(authfile.stat().st_mode) == 0o600
    assert ALICE_PW not in capsys.readouterr().err
    assert pull(f"{basic_registry.host}/team/app@{digest_of(facts)}", clean_env / "x.tar") == 0
    assert cli.main(["logout", basic_registry.host]) == 0
    assert json.loads(authfile.read_text())["auths"] == {}
    # (a pull served wholly from the cache asks the registry nothing: use an empty cache)
    assert pull(f"{basic_registry.host}/team/app@{digest_of(facts)}", clean_env / "y.tar",
                "--cache-dir", str(clean_env / "empty-cache")) == 1
    assert cli.main(["logout", basic_registry.host]) == 1  # nothing left to remove


# --- token auth ---------------------------------------------------------------------------

def test_anonymous_token(token_setup, facts, clean_env, capsys):
    reg, server, _ = token_setup
    n = len(server.requests)
    assert pull(f"{reg.host}/public/app@{digest_of(facts)}", clean_env / "x.tar") == 0, capsys.readouterr().err
    (req,) = server.requests[n:]
    assert req["authorization"] is None and req["scopes"] == ["repository:public/app:pull"]


def test_credentials_from_registry_auth_file(token_setup, facts, clean_env, capsys, monkeypatch):
    reg, server, _ = token_setup
    authfile = write_json(clean_env / "auth.json", {"auths": {reg.host: {"auth": b64(f"reader:{READER_PW}")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(authfile))
    n = len(server.requests)
    assert pull(f"{reg.host}/private/app@{digest_of(facts)}", clean_env / "x.tar") == 0, capsys.readouterr().err
    (req,) = server.requests[n:]
    assert req["authorization"] == "Basic " + b64(f"reader:{READER_PW}")
    assert req["scopes"] == ["repository:private/app:pull"]


def test_containers_auth_json_in_xdg_runtime_dir(token_setup, facts, clean_env, capsys):
    reg, _, _ = token_setup
    write_json(clean_env / "run" / "containers" / "auth.json", {"auths": {reg.host: {"auth": b64(f"alice:{ALICE_PW}")}}})
    assert pull(f"{reg.host}/private/app@{digest_of(facts)}", clean_env / "x.tar") == 0, capsys.readouterr().err


def test_repository_scoped_credentials(token_setup, facts, clean_env, capsys):
    reg, _, _ = token_setup
    write_json(clean_env / "docker" / "config.json", {"auths": {
        reg.host: {"auth": b64("bob:bobs-pw")},
        f"{reg.host}/private": {"auth": b64(f"reader:{READER_PW}")},  # the more specific key wins
    }})
    assert pull(f"{reg.host}/private/app@{digest_of(facts)}", clean_env / "x.tar") == 0, capsys.readouterr().err


def test_wrong_password_with_token_auth(token_setup, facts, clean_env, capsys):
    reg, _, _ = token_setup
    code = pull(f"{reg.host}/private/app@{digest_of(facts)}", clean_env / "x.tar", "--creds", "alice:not-it")
    err = capsys.readouterr().err
    assert code == 1 and "token request refused" in err and "check the credentials" in err and "not-it" not in err


def test_missing_scope_is_a_clear_error(token_setup, facts, clean_env, capsys):
    reg, _, _ = token_setup
    code = pull(f"{reg.host}/private/app@{digest_of(facts)}", clean_env / "x.tar", "--creds", "bob:bobs-pw")
    err = capsys.readouterr().err
    assert code == 1
    assert "access denied" in err and "grant access to this repository" in err
    assert len(err.strip().splitlines()) == 1


def test_a_token_per_scope_set(token_setup, facts, clean_env):
    reg, server, _ = token_setup
    session = Session(credentials=lambda d, r: __import__("registry_tools.registry.auth", fromlist=["Credential"]).Credential("alice", ALICE_PW))
    n = len(server.requests)
    with session:
        registry = session.registry(reg.host)
        registry.head_manifest("private/app", "v1")
        registry.head_manifest("public/app", "v1")
        registry.head_manifest("private/app", "v1")  # the first token is reused for its own scope
        registry.request("GET", "private/app", "/v2/private/app/tags/list", actions="pull,push")
    scopes = [r["scopes"] for r in server.requests[n:]]
    assert scopes == [["repository:private/app:pull"], ["repository:public/app:pull"],
                      ["repository:private/app:pull,push"]]


def test_expired_token_is_renewed_before_use(token_setup, clean_env):
    reg, server, policy = token_setup
    policy.expires_in = 4  # we renew a quarter of the lifetime early: after 3 s
    try:
        with Session(credentials=lambda d, r: None) as session:
            registry = session.registry(reg.host)
            n, mark = len(server.requests), reg.log_offset()
            registry.head_manifest("public/app", "v1")
            registry.head_manifest("public/app", "v1")
            assert len(server.requests) - n == 1
            time.sleep(3.2)
            registry.head_manifest("public/app", "v1")
            assert len(server.requests) - n == 2  # a new token, asked for before the old one ran out
            statuses = [st for m, u, st in reg.statuses_since(mark) if u.startswith("/v2/public")]
            assert statuses == [200, 200, 200]  # no request was refused for a stale token
    finally:
        policy.expires_in = 300


@pytest.mark.parametrize("refuse_post", [False, True], ids=["oauth2-post", "get-fallback"])
def test_identity_token(token_setup, facts, clean_env, capsys, refuse_post):
    reg, server, policy = token_setup
    write_json(clean_env / "docker" / "config.json", {"auths": {reg.host: {"identitytoken": IDENTITY}}})
    policy.refuse_post = refuse_post
    n = len(server.requests)
    try:
        assert pull(f"{reg.host}/private/app@{digest_of(facts)}", clean_env / "x.tar") == 0, capsys.readouterr().err
    finally:
        policy.refuse_post = False
    reqs = server.requests[n:]
    assert reqs[0]["method"] == "POST" and reqs[0]["form"]["grant_type"] == ["refresh_token"]
    if refuse_post:
        assert reqs[1]["method"] == "GET" and reqs[1]["authorization"] == "Basic " + b64(f"<token>:{IDENTITY}")


def _fake_helper(bin_dir: Path, secrets: dict[str, tuple[str, str]], log: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "docker-credential-rttest"
    script.write_text(f"""#!{sys.executable}
import json, sys
action = sys.argv[1]
data = sys.stdin.read().strip()
with open({str(log)!r}, "a") as f:
    f.write(json.dumps([action, data]) + "\\n")
secrets = {json.dumps(secrets)}
if action == "get":
    if data not in secrets:
        print("credentials not found in native keychain"); sys.exit(1)
    user, secret = secrets[data]
    print(json.dumps({{"ServerURL": data, "Username": user, "Secret": secret}}))
""")
    script.chmod(0o755)


@pytest.mark.parametrize("style", ["credHelpers", "credsStore"])
def test_credential_helpers(token_setup, facts, clean_env, capsys, monkeypatch, style):
    reg, _, _ = token_setup
    log = clean_env / "helper.log"
    _fake_helper(clean_env / "bin", {reg.host: ("alice", ALICE_PW)}, log)
    monkeypatch.setenv("PATH", f"{clean_env / 'bin'}:{os.environ['PATH']}")
    config = {"credHelpers": {reg.host: "rttest"}} if style == "credHelpers" else {"credsStore": "rttest"}
    write_json(clean_env / "docker" / "config.json", config)
    assert pull(f"{reg.host}/private/app@{digest_of(facts)}", clean_env / "x.tar") == 0, capsys.readouterr().err
    assert ["get", reg.host] in [json.loads(line) for line in log.read_text().splitlines()]


def test_login_stores_through_the_configured_helper(token_setup, clean_env, monkeypatch, capsys):
    reg, _, _ = token_setup
    log = clean_env / "helper.log"
    _fake_helper(clean_env / "bin", {}, log)
    monkeypatch.setenv("PATH", f"{clean_env / 'bin'}:{os.environ['PATH']}")
    config = write_json(clean_env / "docker" / "config.json", {"credsStore": "rttest"})
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(ALICE_PW + "\n"))
    assert cli.main(["login", reg.host, "-u", "alice", "--password-stdin"]) == 0, capsys.readouterr().err
    stored = [json.loads(line) for line in log.read_text().splitlines()]
    assert stored[-1][0] == "store"
    assert json.loads(stored[-1][1]) == {"ServerURL": reg.host, "Username": "alice", "Secret": ALICE_PW}
    assert ALICE_PW not in config.read_text()  # not also written in the clear


def test_docker_hub_key(tmp_path):
    cfg = write_json(tmp_path / "config.json", {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")}}})
    store = CredentialStore([cfg])
    for domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        cred = store.lookup(domain)
        assert cred and (cred.username, cred.password) == ("hubuser", "hubpw")
    assert store.lookup("ghcr.io") is None
    assert helper_server_url("docker.io") == "https://index.docker.io/v1/"


def test_secrets_never_printed(token_setup, facts, clean_env):
    """--verbose output, errors and results carry no password, no identity token, no bearer token."""
    reg, server, _ = token_setup
    env = dict(os.environ, HOME=str(clean_env / "home"), DOCKER_CONFIG=str(clean_env / "docker"),
               REGISTRY_TOOLS_CACHE=str(clean_env / "cache2"))
    write_json(clean_env / "docker" / "config.json", {"auths": {reg.host: {"identitytoken": IDENTITY}}})
    runs = [
        ["pull", f"{reg.host}/private/app@{digest_of(facts)}", "-o", str(clean_env / "a.tar"), "--verbose",
         "--creds", f"alice:{ALICE_PW}"],
        ["pull", f"{reg.host}/private/app@{digest_of(facts)}", "-o", str(clean_env / "b.tar"), "--verbose",
         "--creds", "alice:Wrong-Secret-99"],
        ["prefetch", f"{reg.host}/private/app:v1", "--verbose", "--json"],
    ]
    n_issued = len(server.issued)
    outputs = ""
    for args in runs:
        res = subprocess.run([sys.executable, "-m", "registry_tools", *args], capture_output=True, text=True, env=env)
        outputs += res.stdout + res.stderr
    assert "GET" in outputs  # verbose really logged requests
    secrets = [ALICE_PW, "Wrong-Secret-99", IDENTITY, b64(f"alice:{ALICE_PW}"), b64("alice:Wrong-Secret-99"),
               b64(f"<token>:{IDENTITY}")] + server.issued[n_issued:]
    assert len(server.issued) > n_issued
    for secret in secrets:
        assert secret not in outputs


def test_verify_needs_only_read_access(token_setup, facts, clean_env, capsys, monkeypatch):
    """verify reads: a user who may only pull verifies a signature (and asks for no push scope)."""
    reg, server, _ = token_setup
    monkeypatch.setenv("COSIGN_PASSWORD", "verify-test")
    key = clean_env / "release"
    assert cli.main(["generate-key", str(key), "-q"]) == 0
    ref = f"{reg.host}/private/app@{digest_of(facts)}"
    assert cli.main(["sign", ref, "--key", f"{key}.key", "--creds", f"alice:{ALICE_PW}", "-q"]) == 0
    capsys.readouterr()
    server.requests.clear()
    code = cli.main(["verify", ref, "--key", f"{key}.pub", "--creds", f"reader:{READER_PW}"])
    err = capsys.readouterr().err
    assert code == 0, err
    scopes = [s for r in server.requests for s in r["scopes"]]
    assert scopes and all("push" not in s for s in scopes), scopes
