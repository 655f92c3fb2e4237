"""What a repository holds, beyond single manifests: every page of its tags, and deletes."""
from __future__ import annotations

import httpx

from registry_tools.errors import NotFound, RegistryError
from registry_tools.model.digest import Digest
from registry_tools.model.manifest import load_json
from registry_tools.registry.client import Registry, error_detail
from registry_tools.registry.transport import answered_by, same_origin


def all_tags(reg: Registry, repo: str, page_size: int = 1000, max_pages: int = 10000) -> list[str]:
    """Every tag, following the registry's `Link: <…>; rel="next"` pages (on its own origin)."""
    out: list[str] = []
    path: str | None = f"/v2/{repo}/tags/list?n={page_size}"
    pages = 0
    while path is not None:
        pages += 1
        if pages > max_pages:
            raise RegistryError(f"{reg.domain}/{repo}: the tag list goes on for over {max_pages} pages")
        tags, path = tag_page(reg, repo, path)
        out += tags
    return out


def tag_page(reg: Registry, repo: str, path: str) -> tuple[list[str], str | None]:
    """One page of tags and the path of the next (None on the last)."""
    resp = reg.request("GET", repo, path, kind="tags")
    if resp.status_code == 404:
        raise NotFound(f"repository {reg.domain}/{repo} not found", 404, "NAME_UNKNOWN")
    reg.check(resp, f"{reg.domain}/{repo}", repo)
    body = load_json(resp.content, f"{reg.domain}/{repo} tag list", RegistryError)
    tags = body.get("tags") if isinstance(body, dict) else None
    found = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
    return found, _next_page(reg, resp, repo)


def _next_page(reg: Registry, resp: httpx.Response, repo: str) -> str | None:
    return next_page(reg, resp, repo, f"/v2/{repo}/tags/list", "tag list")


def next_page(reg: Registry, resp: httpx.Response, repo: str, prefix: str, what: str) -> str | None:
    """The path of the `Link: <…>; rel="next"` page, refused unless it is on the same origin and
    under `prefix`."""
    nxt = resp.links.get("next", {}).get("url")
    if not nxt:
        return None
    page = answered_by(resp)
    url = page.join(nxt)
    if not same_origin(url, page):
        raise RegistryError(f"{reg.domain}/{repo}: the {what}'s next page is on another host; refused")
    if not url.path.startswith(prefix):
        raise RegistryError(f"{reg.domain}/{repo}: the {what}'s next page is not a {what}; refused")
    return url.raw_path.decode("ascii")


def delete_manifest(reg: Registry, repo: str, digest: Digest) -> None:
    """DELETE a manifest by digest; a clear error where the registry does not allow it."""
    what = f"delete of {reg.domain}/{repo}@{digest}"
    resp = reg.request("DELETE", repo, f"/v2/{repo}/manifests/{digest}", actions="pull,push,delete",
                        kind="manifest-delete")
    if resp.status_code in (200, 202, 204):
        return
    if resp.status_code in (400, 405) or (resp.status_code == 403 and "UNSUPPORTED" in resp.text):
        detail, _ = error_detail(resp)
        raise RegistryError(f"{what}: {reg.domain} does not allow deleting manifests ({detail}); "
                            "its operator must enable deletes", resp.status_code)
    reg.check(resp, what, repo)
    raise RegistryError(f"{what}: unexpected HTTP {resp.status_code}", resp.status_code)
