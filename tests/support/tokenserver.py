"""A token server for `docker-registry` with `auth: token`: JWTs signed with a key made here.

Users, passwords, identity tokens and what each may do are set by the test; every
request is recorded so tests can count them and check what was sent.
"""
from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SERVICE = "registry-tools-test"
ISSUER = "registry-tools-test-issuer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Policy:
    passwords: dict[str, str] = field(default_factory=dict)
    identity_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    grants: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # user -> repo prefix -> actions
    anonymous: dict[str, list[str]] = field(default_factory=dict)  # repo prefix -> actions
    expires_in: int = 300
    refuse_post: bool = False  # answer the OAuth2 POST with 404, as some servers do

    def allowed(self, user: str | None, repo: str, wanted: list[str]) -> list[str]:
        table = self.grants.get(user, {}) if user else self.anonymous
        for prefix, actions in table.items():
            if repo == prefix or repo.startswith(prefix.rstrip("*")):
                return [a for a in wanted if a in actions]
        return []


class TokenServer:
    def __init__(self, root: Path, policy: Policy):
        self.policy = policy
        self.requests: list[dict] = []
        self.issued: list[str] = []
        self.down = False
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-tools test token signer")])
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(minutes=5))
                      .not_valid_after(now + datetime.timedelta(days=1))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .sign(self._key, hashes.SHA256()))
        root.mkdir(parents=True, exist_ok=True)
        self.bundle = root / "token-signer.pem"
        self.bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_GET(self):
                server._handle(self, "GET")

            def do_POST(self):
                server._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def registry_config(self) -> str:
        return (f"auth:\n  token:\n    realm: {self.realm}\n    service: {SERVICE}\n"
                f"    issuer: {ISSUER}\n    rootcertbundle: {self.bundle}\n")

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- tokens ---------------------------------------------------------------------------
    def _sign(self, user: str | None, access: list[dict]) -> str:
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]}
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + self.policy.expires_in,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
        r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        token = signing_input.decode() + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        self.issued.append(token)
        return token

    def _access(self, user: str | None, scopes: list[str]) -> list[dict]:
        out = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            granted = self.policy.allowed(user, parts[1], parts[2].split(","))
            out.append({"type": "repository", "name": parts[1], "actions": granted})
        return out

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        query = parse_qs(url.query)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)).decode() if method == "POST" else ""
        form = parse_qs(body)
        self.requests.append({"method": method, "path": url.path, "scopes": query.get("scope", []) or
                              form.get("scope", [""])[0].split(), "authorization": h.headers.get("Authorization"),
                              "form": form})
        if self.down:
            return self._reply(h, 503, {"errors": [{"code": "UNAVAILABLE"}]})
        if method == "POST":
            if self.policy.refuse_post:
                return self._reply(h, 404, {})
            user = None
            if form.get("grant_type") == ["refresh_token"]:
                user = self.policy.identity_tokens.get(form.get("refresh_token", [""])[0])
            if user is None:
                return self._reply(h, 401, {"error": "invalid_grant"})
            token = self._sign(user, self._access(user, form.get("scope", [""])[0].split()))
            return self._reply(h, 200, {"access_token": token, "expires_in": self.policy.expires_in})
        user = None
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            if name == "<token>" and secret in self.policy.identity_tokens:
                user = self.policy.identity_tokens[secret]
            elif self.policy.passwords.get(name) == secret:
                user = name
            else:
                return self._reply(h, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        token = self._sign(user, self._access(user, query.get("scope", [])))
        self._reply(h, 200, {"token": token, "access_token": token, "expires_in": self.policy.expires_in,
                             "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()})

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def htpasswd_config(path: Path, users: dict[str, str]) -> str:
    """An htpasswd file (bcrypt, by Debian's `htpasswd`) and the registry config that uses it."""
    import subprocess

    path.write_text("")
    for user, password in users.items():
        out = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True).stdout
        with open(path, "a") as f:
            f.write(out.strip() + "\n")
    return f"auth:\n  htpasswd:\n    realm: registry-tools-test\n    path: {path}\n"
