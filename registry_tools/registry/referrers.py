"""Referrers: the manifests whose `subject` names a manifest (signatures, SBOMs, attestations).

An OCI 1.1 registry answers `GET /v2/<name>/referrers/<digest>` with an index of them and
says, with an `OCI-Subject` header on the PUT, that it keeps that index itself. Where the
API is missing (distribution 2.8, most registries before 2024), writers keep the same
index under the fallback tag `sha256-<hex>` of the subject, and readers read it there.
Both answers are untrusted like everything read: what the tag names must be an index (on
some registries the tag resolves to the image itself, oras#2148), and an entry, from the
API or the tag alike, is listed only once its own manifest, fetched by digest and
verified, has that `subject`.
"""
from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from registry_tools.errors import ManifestError, NotFound, RegistryError, VerificationError, printable
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.registry.client import Registry
from registry_tools.registry.repository import Listing, linked_pages
from registry_tools.registry.source import RegistrySource

log = logging.getLogger("registry_tools.referrers")

NO_API = (404, 405, 400)
MAX_PAGES = 1000  # of one subject's referrers list


def fallback_tag(digest: Digest) -> str:
    """The tag under which registries without the API keep a subject's referrers index."""
    return f"{digest.algorithm}-{digest.hex}"


def entry_of(raw: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    """A referrer's descriptor as the referrers index carries it: media type, digest, size,
    artifactType (the manifest's, else its config's media type) and annotations."""
    entry: dict[str, Any] = {"mediaType": doc.get("mediaType") or mf.OCI_MANIFEST,
                             "digest": str(Digest.of_bytes(raw)), "size": len(raw)}
    artifact = doc.get("artifactType")
    if not isinstance(artifact, str) or not artifact:
        config = doc.get("config")
        artifact = config.get("mediaType") if isinstance(config, dict) else None
    if isinstance(artifact, str) and artifact:
        entry["artifactType"] = artifact
    if isinstance(doc.get("annotations"), dict) and doc["annotations"]:
        entry["annotations"] = doc["annotations"]
    return entry


def subject_of(raw: bytes, where: str) -> mf.Descriptor | None:
    doc = mf.load_json(raw, where)
    if not isinstance(doc, dict) or doc.get("subject") is None:
        return None
    return mf.Descriptor.from_json(doc["subject"], f"{where} subject")


@dataclass
class Referrers:
    subject: Digest
    descriptors: list[mf.Descriptor] = field(default_factory=list)
    via: str = "api"  # "api" or "tag": where they were listed


def _index_entries(raw: bytes, where: str) -> list[mf.Descriptor]:
    doc = mf.load_json(raw, where)
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise ManifestError(f"{where}: not an index (no manifests list)")
    media_type = doc.get("mediaType")
    if media_type is not None and media_type != mf.OCI_INDEX:
        raise ManifestError(f"{where}: a {printable(str(media_type))}, not an OCI index")
    return [mf.Descriptor.from_json(e, where) for e in doc["manifests"]]


def _artifact_type(d: mf.Descriptor) -> str:
    value = d.raw.get("artifactType")
    return value if isinstance(value, str) else ""


def list_referrers(source: RegistrySource, subject: Digest, artifact_type: str | None = None) -> Referrers:
    """What refers to `subject` in the source's repository: from the API, else the fallback tag."""
    reg, repo = source.registry, source.repo
    where = f"referrers of {reg.domain}/{repo}@{subject}"
    query = f"?artifactType={quote(artifact_type, safe='')}" if artifact_type else ""
    path = f"/v2/{repo}/referrers/{subject}{query}"

    def fetch(page: str) -> httpx.Response:
        return reg.request("GET", repo, page, headers={"Accept": mf.OCI_INDEX}, kind="referrers",
                           limit=mf.MAX_MANIFEST_SIZE)

    # the API's pages (Link: <…>; rel="next"), bounded as every paged list is
    pages = linked_pages(reg, repo, Listing(path, f"/v2/{repo}/referrers/", "referrers list", fetch, MAX_PAGES))
    first = next(pages)
    if first.status_code in NO_API:
        found = Referrers(subject, _from_fallback(source, subject, where), "tag")
    else:
        listed: list[mf.Descriptor] = []
        for resp in itertools.chain([first], pages):
            reg.check(resp, where, repo)
            if resp.status_code != 200:
                raise RegistryError(f"{where}: unexpected HTTP {resp.status_code}", resp.status_code)
            listed += _index_entries(resp.content, where)
        found = Referrers(subject, _with_subject(source, subject, listed, where), "api")
    if artifact_type:  # a registry may ignore the filter (it says so with OCI-Filters-Applied)
        found.descriptors = [d for d in found.descriptors if _artifact_type(d) == artifact_type]
    return found


def _from_fallback(source: RegistrySource, subject: Digest, where: str) -> list[mf.Descriptor]:
    reg, repo = source.registry, source.repo
    tag = fallback_tag(subject)
    try:
        raw, _ = reg.get_manifest(repo, tag)
    except NotFound:
        return []
    try:
        entries = _index_entries(raw, f"{where} (tag {tag})")
    except ManifestError as e:
        log.warning("%s; ignoring the tag", printable(str(e)))  # e.g. a registry resolving the tag to the image itself
        return []
    return _with_subject(source, subject, entries, where)


def _with_subject(source: RegistrySource, subject: Digest, entries: list[mf.Descriptor],
                  where: str) -> list[mf.Descriptor]:
    """The entries whose manifest, fetched by digest and verified, names `subject` as its subject;
    the others skipped, logged. What the API answers and what the fallback tag holds alike."""
    reg, repo = source.registry, source.repo
    out = []
    for d in entries:
        try:
            got, _ = source.manifest_bytes(d.digest, d.size)
            named = subject_of(got, f"manifest {reg.domain}/{repo}@{d.digest}")
        except (ManifestError, NotFound, VerificationError) as e:  # a wrong size, a missing or bad manifest
            log.warning("%s: skipping entry %s: %s", where, d.digest, printable(str(e)))
            continue
        if named is None or named.digest != subject:
            log.warning("%s: skipping entry %s: its subject is not %s", where, d.digest, subject)
            continue
        out.append(d)
    return out


def put_referrer(reg: Registry, repo: str, raw: bytes, media_type: str, tag: str | None = None) -> Digest:
    """PUT a manifest that names a subject (by digest, and `tag` if given); where the registry does
    not say it indexed the subject (no OCI-Subject header), add the manifest to the fallback index."""
    digest, headers = reg.put_manifest_answer(repo, str(Digest.of_bytes(raw)), raw, media_type)
    if tag:
        reg.put_manifest(repo, tag, raw, media_type)
    doc = mf.load_json(raw, f"manifest {digest}")
    subject = doc.get("subject") if isinstance(doc, dict) else None
    if subject is not None and not headers.get("oci-subject"):
        subject_digest = mf.Descriptor.from_json(subject, f"manifest {digest} subject").digest
        update_fallback(reg, repo, subject_digest, entry_of(raw, doc))
    return digest


TRIES = 8  # writes of one fallback index before giving up (each then read back)
SETTLE = (0.3, 0.6)  # seconds (jittered) between a write and its read-back


def update_fallback(reg: Registry, repo: str, subject: Digest, entry: dict[str, Any]) -> Digest | None:
    """Add `entry` to the subject's fallback index (made if missing), entries sorted by digest; a
    tag naming something else than an index is left alone (logged). None: nothing to change.

    The tag has no compare-and-swap, so writers at once could each replace the index with what
    they read plus their own entry, and lose the others'. After each write the index is read back
    once the other writers have had time to land a write of what they read before ours (SETTLE);
    if anything we wrote is missing, what is there now and what we wrote are merged and written
    again, up to TRIES times. Every writer restores what a later one dropped, so the index ends
    up listing every entry."""
    tag = fallback_tag(subject)
    where = f"{reg.domain}/{repo}:{tag}"
    before = _fallback_entries(reg, repo, tag, where)
    if before is None or entry in before:
        return None
    written: list[dict[str, Any]] = []
    for _ in range(TRIES):
        want = _merged(before, [*written, entry])
        digest = reg.put_manifest(repo, tag, _fallback_index(want), mf.OCI_INDEX)
        written = want
        reg.cancel.sleep(random.uniform(*SETTLE))
        now = _fallback_entries(reg, repo, tag, where)
        if now is None:  # replaced by something that is not an index meanwhile: left alone
            return digest
        if all(e in now for e in want):
            return digest
        log.info("%s: another writer dropped entries; writing them again", where)
        before = now
    raise RegistryError(f"{where}: the fallback index kept losing entries to other writers ({TRIES} writes); "
                        "run the command again")


def _fallback_entries(reg: Registry, repo: str, tag: str, where: str) -> list[dict[str, Any]] | None:
    """The fallback index's entries ([] if there is none), or None if the tag names no index."""
    try:
        raw, _ = reg.get_manifest(repo, tag)
    except NotFound:
        return []
    try:
        return [d.raw for d in _index_entries(raw, where)]
    except ManifestError as e:
        log.warning("%s; not updating the fallback tag", printable(str(e)))
        return None


def _merged(there: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What is there and ours, ours replacing an entry of the same digest, sorted by digest."""
    mine = {str(e.get("digest")): e for e in ours}
    kept = [e for e in there if str(e.get("digest")) not in mine]
    return sorted([*kept, *mine.values()], key=lambda e: str(e.get("digest")))


def _fallback_index(entries: list[dict[str, Any]]) -> bytes:
    return mf.canonical_json({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries})
