"""Uploading a blob: HEAD, cross-repository mount, POST / PATCH / PUT, and the chunked fallback.

Upload Locations are followed wherever the registry points, but RegistryAuth attaches
credentials only to the registry's own origin, so a Location on another host never
receives them.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator
from urllib.parse import urljoin, urlsplit

import httpx

from registry_tools.errors import RegistryError, RegistryToolsError
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.registry.client import Registry, returned_digest
from registry_tools.registry.transport import answered_by

Chunks = Callable[[int, int], Iterator[bytes]]  # the blob's bytes from start to end, read anew each call
MIN_CHUNK = 8 << 20  # at least 5 MiB: ECR refuses smaller parts but the last
log = logging.getLogger("registry_tools.upload")


def blob_exists(reg: Registry, repo: str, digest: Digest, size: int | None = None) -> bool:
    resp = reg.request("HEAD", repo, f"/v2/{repo}/blobs/{digest}", actions="pull,push", kind="blob-head")
    if resp.status_code == 404:
        return False
    reg.check(resp, f"{reg.domain}/{repo}@{digest}", repo)
    length = resp.headers.get("content-length")
    return size is None or not length or not length.isdigit() or int(length) == size


def start_upload(reg: Registry, repo: str, digest: Digest, mount_from: str | None = None) -> tuple[bool, str, int]:
    """POST an upload: (mounted, the session URL, the registry's minimum chunk size)."""
    query = f"?mount={digest}&from={mount_from}" if mount_from else ""
    extra = (f"repository:{mount_from}:pull",) if mount_from else ()
    resp = reg.request("POST", repo, f"/v2/{repo}/blobs/uploads/{query}", actions="pull,push",
                       kind="upload", extra_scopes=extra, retry=False)
    if mount_from and resp.status_code == 201:
        return True, "", 0
    if mount_from and resp.status_code != 202:
        # A refused mount must start an upload (202), but Harbor answers 401 and Quay and Harbor 400
        # for some: ask again without the mount, as the distribution spec's FAQ tells clients to.
        log.info("mounting %s from %s refused (HTTP %d); uploading it", digest, mount_from, resp.status_code)
        return start_upload(reg, repo, digest, None)
    if resp.status_code != 202:
        reg.check(resp, f"upload of {digest} to {reg.domain}/{repo}", repo)
        raise RegistryError(f"upload of {digest} to {reg.domain}/{repo}: unexpected HTTP {resp.status_code}",
                            resp.status_code)
    min_chunk = resp.headers.get("oci-chunk-min-length", "0")
    return False, location(reg, resp), int(min_chunk) if min_chunk.isdigit() else 0


def cancel(reg: Registry, repo: str, where: str) -> None:
    """DELETE an upload session that failed, as the distribution spec asks; a failure here is ignored
    (the registry drops the session when it expires)."""
    try:
        reg.request("DELETE", repo, where, actions="pull,push", kind="upload", retry=False)
    except (RegistryToolsError, httpx.HTTPError) as e:
        log.info("cancelling the upload session failed (%s); the registry will expire it", e)


def location(reg: Registry, resp: httpx.Response) -> str:
    """Where an upload goes next: Location resolved against the request URL, query kept."""
    loc = resp.headers.get("location")
    if not loc:
        raise RegistryError(f"{reg.domain}: upload answer has no Location", resp.status_code)
    url = urljoin(str(answered_by(resp)), loc)
    if urlsplit(url).scheme not in ("http", "https"):
        raise RegistryError(f"{reg.domain}: upload Location {loc[:100]!r} is not an http(s) URL", resp.status_code)
    return url


def upload(reg: Registry, repo: str, where: str, desc: mf.Descriptor, chunks: Chunks, min_chunk: int = 0) -> Digest:
    """PATCH the blob (in one piece, or in chunks if the registry refuses that), then PUT."""
    digest, size = desc.digest, desc.size
    what = f"upload of {digest} to {reg.domain}/{repo}"
    resp = reg.request("PATCH", repo, where, actions="pull,push", kind="upload",
                       headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                       content=chunks(0, size), retry=False)
    if resp.status_code in (413, 416):
        where = _upload_chunked(reg, repo, where, size, chunks, min_chunk, what)
    else:
        if resp.status_code not in (202, 204):
            reg.check(resp, what, repo)
            raise RegistryError(f"{what}: unexpected HTTP {resp.status_code}", resp.status_code)
        where = location(reg, resp)
    sep = "&" if urlsplit(where).query else "?"
    resp = reg.request("PUT", repo, f"{where}{sep}digest={digest}", actions="pull,push", kind="upload",
                       headers={"Content-Length": "0"}, retry=False)
    if resp.status_code != 201:
        reg.check(resp, what, repo)
        raise RegistryError(f"{what}: unexpected HTTP {resp.status_code}", resp.status_code)
    return returned_digest(resp, digest, what)


def _upload_chunked(reg: Registry, repo: str, where: str, size: int, chunks: Chunks, min_chunk: int,
                    what: str) -> str:
    """The chunked protocol: PATCHes with Content-Range, each at least OCI-Chunk-Min-Length."""
    step = max(min_chunk, MIN_CHUNK)
    start = 0
    while start < size:
        end = min(size, start + step)
        resp = reg.request("PATCH", repo, where, actions="pull,push", kind="upload",
                           headers={"Content-Type": "application/octet-stream", "Content-Length": str(end - start),
                                    "Content-Range": f"{start}-{end - 1}"},
                           content=chunks(start, end), retry=False)
        if resp.status_code != 202:
            reg.check(resp, what, repo)
            raise RegistryError(f"{what}: chunk at {start} refused (HTTP {resp.status_code})", resp.status_code)
        where = location(reg, resp)
        start = end
    return where
