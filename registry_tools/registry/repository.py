"""What a repository holds, beyond single manifests: every page of its tags, and deletes.

A list the registry splits into pages (tags, referrers) is read through `linked_pages`, with
bounds on the whole of it, not only on each page: a registry whose pages never end, or go
round in a circle, ends in one clear error instead of unbounded memory and requests.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import httpx

from registry_tools.errors import NotFound, RegistryError, printable
from registry_tools.model.digest import Digest
from registry_tools.model.manifest import load_json
from registry_tools.model.reference import TAG_RE
from registry_tools.registry.client import Registry, error_detail
from registry_tools.registry.transport import answered_by, same_origin

log = logging.getLogger("registry_tools.repository")

MAX_TAGS = 100_000  # tags in one repository's list, all pages together
MAX_LIST_BYTES = 32 << 20  # the bodies (and next-page URLs) of one paged list, all pages together
MAX_PAGES = 10_000


@dataclass(frozen=True)
class Listing:
    """A list a registry splits into pages: where it starts, the path every page must be under,
    what it is called in messages, how each page is asked for, and how many pages it may take."""

    path: str
    prefix: str
    what: str
    fetch: Callable[[str], httpx.Response]
    max_pages: int = MAX_PAGES


def linked_pages(reg: Registry, repo: str, listing: Listing) -> Iterator[httpx.Response]:
    """Each page of a list the registry splits with `Link: <…>; rel="next"`, the first at its path:
    a next page only on the registry's own origin and under the listing's prefix (`next_page`),
    never a page already read (pages that go round in a circle are refused: what they hold past
    the circle cannot be known), at most its `max_pages` pages and MAX_LIST_BYTES in all."""
    path, prefix, what, fetch, max_pages = (listing.path, listing.prefix, listing.what, listing.fetch,
                                            listing.max_pages)
    where = f"{reg.domain}/{repo}: the {what}"
    seen: set[str] = set()
    total = 0
    nxt: str | None = path
    while nxt is not None:
        if nxt in seen:
            raise RegistryError(f"{where}'s next page is one already read (its pages go round in a circle); "
                                "refused")
        if len(seen) >= max_pages:
            raise RegistryError(f"{where} goes on for over {max_pages} pages; refused")
        seen.add(nxt)
        resp = fetch(nxt)
        total += len(nxt) + len(resp.content)
        if total > MAX_LIST_BYTES:
            raise RegistryError(f"{where} goes past {MAX_LIST_BYTES >> 20} MiB; refused")
        yield resp
        nxt = next_page(reg, resp, repo, prefix, what)


def all_tags(reg: Registry, repo: str, page_size: int = 1000) -> list[str]:
    """Every tag, following the registry's Link pages (bounded as `linked_pages` says), at most
    MAX_TAGS of them."""
    out: list[str] = []
    pages = linked_pages(reg, repo, Listing(f"/v2/{repo}/tags/list?n={page_size}", f"/v2/{repo}/tags/list",
                                            "tag list", lambda path: reg.request("GET", repo, path, kind="tags")))
    for resp in pages:
        out += _tags_of(reg, repo, resp)
        if len(out) > MAX_TAGS:
            raise RegistryError(f"{reg.domain}/{repo}: the tag list goes past {MAX_TAGS:,} tags; refused")
    return out


def tag_page(reg: Registry, repo: str, path: str) -> list[str]:
    """One page of tags (the first, where only a sample is wanted)."""
    return _tags_of(reg, repo, reg.request("GET", repo, path, kind="tags"))


def _tags_of(reg: Registry, repo: str, resp: httpx.Response) -> list[str]:
    """The tags a page lists: only names of the distribution spec's tag grammar (no escape sequence
    or line break from a registry reaches a terminal or a script); the others are left out, logged."""
    if resp.status_code == 404:
        raise NotFound(f"repository {reg.domain}/{repo} not found", 404, "NAME_UNKNOWN")
    reg.check(resp, f"{reg.domain}/{repo}", repo)
    body = load_json(resp.content, f"{reg.domain}/{repo} tag list", RegistryError)
    tags = body.get("tags") if isinstance(body, dict) else None
    listed = tags if isinstance(tags, list) else []
    found = [t for t in listed if isinstance(t, str) and TAG_RE.fullmatch(t)]
    if len(found) < len(listed):
        bad = [t for t in listed if not (isinstance(t, str) and TAG_RE.fullmatch(t))]
        shown = ", ".join(repr(t)[:80] for t in bad[:3]) + (", …" if len(bad) > 3 else "")
        log.warning("%s/%s: left out %d name(s) in the tag list that are not tags: %s", reg.domain, repo,
                    len(bad), printable(shown))
    return found


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
