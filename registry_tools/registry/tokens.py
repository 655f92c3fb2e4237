"""Bearer tokens from a registry's token server: the GET with Basic credentials, the OAuth2
refresh-token POST for identity tokens (with the GET form as its fallback).

Token requests never go through RegistryAuth and never follow redirects; credentials
go only to a realm the registry's own challenge named, over TLS (or loopback).
"""
from __future__ import annotations

from typing import Callable
from urllib.parse import urlencode

import httpx

from registry_tools.errors import AuthError, NetworkError
from registry_tools.model.manifest import load_json
from registry_tools.registry import auth
from registry_tools.registry.pacing import KIND
from registry_tools.registry.transport import REDIRECTS, read_body, safe_url

class TokenClient:
    """Fetches tokens for one registry (RegistryAuth caches them per realm, service and scopes)."""

    def __init__(self, host: str, http: Callable[[], httpx.Client]):
        """`http`: the registry's client (its transport: routes, retries, bounds), asked when needed."""
        self.host = host
        self.http = http

    def fetch(self, ch: auth.Challenge, scopes: tuple[str, ...],
                     cred: auth.Credential | None) -> auth.Token:
        realm = ch.params.get("realm", "")
        if not realm:
            raise AuthError(f"registry {self.host} asked for a bearer token but named no realm")
        auth.validate_realm(realm, secret=cred is not None)
        service = ch.params.get("service", "")
        if cred is not None and cred.identity_token:
            return self._refresh(realm, service, scopes, cred)
        query = ([("service", service)] if service else []) + [("scope", s) for s in scopes]
        headers = {"Authorization": auth.basic_header(cred.username, cred.password)} if cred else {}
        resp = self._request("GET", realm + ("&" if "?" in realm else "?") + urlencode(query), headers)
        if resp.status_code in (401, 403):
            raise AuthError(f"registry {self.host}: token request refused ({resp.status_code}); "
                            + ("check the credentials" if cred else "credentials are needed: run registry-tools login"),
                            status=resp.status_code)
        if resp.status_code != 200:
            raise AuthError(f"registry {self.host}: token server answered HTTP {resp.status_code}",
                            resp.status_code)
        return self._token(resp)

    def _refresh(self, realm: str, service: str, scopes: tuple[str, ...],
                       cred: auth.Credential) -> auth.Token:
        form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token, "service": service,
                "scope": " ".join(scopes), "client_id": "registry-tools"}
        resp = self._request("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"},
                                   urlencode(form).encode())
        if resp.status_code in (404, 405):  # an OAuth2 POST the server does not take: the GET form
            query = [("service", service)] + [("scope", s) for s in scopes]
            resp = self._request("GET", realm + "?" + urlencode(query),
                                       {"Authorization": auth.basic_header("<token>", cred.identity_token)})
        if resp.status_code != 200:
            raise AuthError(f"registry {self.host}: the identity token was refused (HTTP {resp.status_code}); "
                            "run registry-tools login again", resp.status_code)
        return self._token(resp)

    def _request(self, method: str, url: str, headers: dict[str, str], content: bytes | None = None
                       ) -> httpx.Response:
        """A request to the token server: never through RegistryAuth, never redirected."""
        try:
            req = self.http().build_request(method, url, headers=headers, content=content,
                                              extensions={KIND: "token", REDIRECTS: 0})
            resp = self.http().send(req, auth=None, stream=True)
            read_body(resp)
            return resp
        except NetworkError as e:
            raise AuthError(f"registry {self.host}: its token server at {safe_url(url)} cannot be reached "
                            f"({str(e).split(' failed: ', 1)[-1]})") from None

    def _token(self, resp: httpx.Response) -> auth.Token:
        where = f"registry {self.host}"
        body = load_json(resp.content, f"{where}: token answer", AuthError)
        if not isinstance(body, dict):
            raise AuthError(f"{where}: the token server sent no token")
        value = auth.token_value(body.get("token") or body.get("access_token"), where)
        return auth.Token.lasting(value, auth.token_lifetime(body.get("expires_in")))
