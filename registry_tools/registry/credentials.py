"""Where credentials live: docker's and containers' auth files and credential helpers.

Looked up in the order containers/image uses: $REGISTRY_AUTH_FILE, else
$XDG_RUNTIME_DIR/containers/auth.json; then ~/.config/containers/auth.json; then
$DOCKER_CONFIG/config.json (default ~/.docker/config.json). In each file a registry's
`credHelpers` entry wins, then `auths`, then the file's `credsStore`.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_tools.model.manifest import load_json
from registry_tools.registry.auth import Credential
from registry_tools.errors import AuthError, UsageError
from registry_tools.fileio import write_json_atomic

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
HELPER_TIMEOUT = 30


def normalize_key(key: str) -> str:
    """An auths key as a registry[/path]: no scheme, no /v1/ or /v2/ suffix, Docker Hub as docker.io."""
    k = key.strip()
    for prefix in ("https://", "http://"):
        if k.startswith(prefix):
            k = k[len(prefix):]
    k = k.rstrip("/")
    for suffix in ("/v1", "/v2"):
        if k.endswith(suffix):
            k = k[: -len(suffix)]
    host, _, path = k.partition("/")
    if host in _HUB_ALIASES:
        host = "docker.io"
    return f"{host}/{path}" if path else host


def helper_server_url(domain: str) -> str:
    """What a credential helper is asked for: Docker Hub under its historical key."""
    return DOCKER_HUB_KEY if normalize_key(domain) == "docker.io" else domain


def auth_files() -> list[Path]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    elif os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path(os.path.expanduser("~"))
    files.append(home / ".config" / "containers" / "auth.json")
    files.append(docker_config_file())
    return files


def docker_config_file() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AuthError(f"cannot read credentials file {path}: {e.strerror}") from None
    data = load_json(text, f"credentials file {path}", AuthError) if text.strip() else {}
    if not isinstance(data, dict):
        raise AuthError(f"credentials file {path} is not a JSON object")
    for key in ("auths", "credHelpers"):
        section = data.get(key)
        if section is not None and not isinstance(section, dict):
            raise AuthError(f"credentials file {path}: {key!r} must be an object")
    if "credHelpers" in data and not all(isinstance(h, str) for h in (data["credHelpers"] or {}).values()):
        raise AuthError(f"credentials file {path}: every credHelpers entry must name a helper")
    if data.get("credsStore") is not None and not isinstance(data["credsStore"], str):
        raise AuthError(f"credentials file {path}: 'credsStore' must name a helper")
    return data


def _decode_auth(entry: dict[str, Any], path: Path, key: str) -> Credential | None:
    for field in ("auth", "identitytoken", "username", "password"):
        if entry.get(field) is not None and not isinstance(entry[field], str):
            raise AuthError(f"{path}: the entry for {key} has a {field!r} that is not a string")
    if entry.get("identitytoken"):
        return Credential(username=entry.get("username", ""), identity_token=entry["identitytoken"])
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"{path}: the entry for {key} has an unreadable 'auth' value") from None
        return Credential(user, password)
    if entry.get("username") and entry.get("password"):
        return Credential(entry["username"], entry["password"])
    return None


def run_helper(helper: str, action: str, payload: str) -> str:
    """Run `docker-credential-HELPER ACTION` with `payload` on stdin; its stdout."""
    program = f"docker-credential-{helper}"
    exe = shutil.which(program)
    if exe is None:
        raise AuthError(f"credential helper {program} is configured but not installed")
    try:
        res = subprocess.run([exe, action], input=payload, capture_output=True, text=True, timeout=HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} did not answer within {HELPER_TIMEOUT}s") from None
    if res.returncode != 0:
        message = (res.stdout or res.stderr).strip().splitlines()[:1]
        if action == "get" and message and "credentials not found" in message[0].lower():
            return ""
        raise AuthError(f"credential helper {program} {action} failed: {message[0] if message else res.returncode}")
    return res.stdout


def _from_helper(helper: str, domain: str) -> Credential | None:
    out = run_helper(helper, "get", helper_server_url(domain))
    if not out.strip():
        return None
    data = load_json(out, f"credential helper docker-credential-{helper}'s answer", AuthError)
    if not isinstance(data, dict):
        raise AuthError(f"credential helper docker-credential-{helper} printed something that is not an object")
    user, secret = data.get("Username", ""), data.get("Secret", "")
    if not isinstance(user, str) or not isinstance(secret, str):
        raise AuthError(f"credential helper docker-credential-{helper} printed a non-string Username or Secret")
    if not secret:
        return None
    if user == "<token>":
        return Credential(identity_token=secret)
    return Credential(user, secret)


@dataclass
class CredentialStore:
    """Looks credentials up for a registry (and optionally a repository within it)."""

    files: list[Path] | None = None

    def lookup(self, domain: str, repo: str = "") -> Credential | None:
        target = normalize_key(domain)
        for path in self.files if self.files is not None else auth_files():
            data = _read(path)
            if data is None:
                continue
            helpers = data.get("credHelpers") or {}
            for key, helper in helpers.items():
                if normalize_key(key) == target:
                    cred = _from_helper(helper, domain)
                    if cred:
                        return cred
            auths = data.get("auths") or {}
            best: tuple[int, str, dict] | None = None
            for key, entry in auths.items():
                k = normalize_key(key)
                full = f"{target}/{repo}" if repo else target
                if (k == target or (repo and (full == k or full.startswith(k + "/")))) and isinstance(entry, dict):
                    if best is None or len(k) > best[0]:  # the most specific key wins
                        best = (len(k), key, entry)
            if best is not None:
                cred = _decode_auth(best[2], path, best[1])
                if cred:
                    return cred
            if data.get("credsStore"):
                cred = _from_helper(data["credsStore"], domain)
                if cred:
                    return cred
        return None

    def __call__(self, domain: str, repo: str = "") -> Credential | None:
        return self.lookup(domain, repo)


# --- login / logout ------------------------------------------------------------------------

def default_login_file() -> Path:
    """Where `login` writes: $REGISTRY_AUTH_FILE if set, else docker's config.json, which every tool reads."""
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return Path(os.environ["REGISTRY_AUTH_FILE"])
    return docker_config_file()


def _write_private(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, data, mode=0o600, indent=2)


def _entry_key(domain: str, data: dict[str, Any]) -> str:
    """Reuse the file's existing key for this registry, else the conventional one."""
    target = normalize_key(domain)
    for key in (data.get("auths") or {}):
        if normalize_key(key) == target:
            return key
    return DOCKER_HUB_KEY if target == "docker.io" else domain


def store_login(domain: str, username: str, password: str, path: Path | None = None) -> Path:
    """Save credentials: through the configured helper if there is one, else in the file."""
    if not username or not password:
        raise UsageError("login needs a username and a password")
    path = path or default_login_file()
    data = _read(path) or {}
    helper = _helper_for(domain, data)
    if helper:
        payload = json.dumps({"ServerURL": helper_server_url(domain), "Username": username, "Secret": password})
        run_helper(helper, "store", payload)
        auths = data.get("auths") or {}
        auths.pop(_entry_key(domain, data), None)  # a stale inline copy would shadow the helper
        data["auths"] = auths
    else:
        auths = data.setdefault("auths", {})
        auths[_entry_key(domain, data)] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _write_private(path, data)
    return path


def remove_login(domain: str, path: Path | None = None) -> bool:
    """Forget a registry's credentials; True if there were any."""
    path = path or default_login_file()
    data = _read(path) or {}
    removed = False
    auths = data.get("auths") or {}
    for key in [k for k in auths if normalize_key(k) == normalize_key(domain)]:
        del auths[key]
        removed = True
    helper = _helper_for(domain, data)
    if helper:
        try:
            run_helper(helper, "erase", helper_server_url(domain))
            removed = True
        except AuthError:
            pass
    if removed:
        _write_private(path, data)
    return removed


def _helper_for(domain: str, data: dict[str, Any]) -> str | None:
    for key, helper in (data.get("credHelpers") or {}).items():
        if normalize_key(key) == normalize_key(domain):
            return helper
    return data.get("credsStore") or None
