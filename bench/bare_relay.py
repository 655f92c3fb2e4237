"""The floor of a registry-to-registry copy in Python, for bench/copy_bench.py.

What any copier must do and nothing more: read the index and its manifests from the
source, stream every blob from the source to the destination through sha256 (checked
before the upload is committed), then put the manifests and the tag. Raw sockets and
plain HTTP/1.1, no HTTP library, no HEADs (the destination is known to be empty), no
retries, no progress, `JOBS` blobs at once, largest first. It is not a tool: it only
shows how fast a copy can be on this machine with the registries' own CPU, so that the
benchmark can print how close registry-tools comes to it.
Usage: python3 bench/bare_relay.py SRC_HOST/REPO:TAG DEST_HOST/REPO:TAG [--jobs 4]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import socket
from concurrent.futures import ThreadPoolExecutor

ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])
READ = 1 << 20


class Conn:
    """One HTTP/1.1 connection to host:port; requests with Content-Length bodies only."""

    def __init__(self, host: str):
        self.host = host
        name, port = host.rsplit(":", 1)
        self.sock = socket.create_connection((name, int(port)))
        self.rest = b""

    def head(self) -> tuple[int, dict[str, str]]:
        buf = self.rest
        while b"\r\n\r\n" not in buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"{self.host} closed the connection")
            buf += data
        head, self.rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def body(self, headers: dict[str, str]) -> bytes:
        n = int(headers.get("content-length", "0"))
        while len(self.rest) < n:
            data = self.sock.recv(READ)
            if not data:
                raise ConnectionError(f"{self.host} closed the connection")
            self.rest += data
        body, self.rest = self.rest[:n], self.rest[n:]
        return body

    def send_head(self, method: str, path: str, length: int, extra: str = "") -> None:
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {length}\r\n"
                          f"{extra}\r\n".encode())

    def request(self, method: str, path: str, body: bytes = b"", extra: str = "") -> tuple[int, dict[str, str], bytes]:
        self.send_head(method, path, len(body), extra)
        if body:
            self.sock.sendall(body)
        status, headers = self.head()
        return status, headers, (b"" if method == "HEAD" else self.body(headers))

    def close(self) -> None:
        self.sock.close()


def _path(location: str, host: str) -> str:
    return location.split(host, 1)[1] if location.startswith("http") else location


def relay(src: str, dest: str, repo_src: str, repo_dest: str, desc: dict) -> None:
    digest, size = desc["digest"], desc["size"]
    s, d = Conn(src), Conn(dest)
    try:
        status, headers, _ = d.request("POST", f"/v2/{repo_dest}/blobs/uploads/")
        assert status == 202, f"POST {status}"
        where = _path(headers["location"], dest)
        s.send_head("GET", f"/v2/{repo_src}/blobs/{digest}", 0)
        status, headers = s.head()
        assert status == 200 and int(headers["content-length"]) == size, f"GET {status}"
        d.send_head("PATCH", where, size, "Content-Type: application/octet-stream\r\n")
        h = hashlib.sha256()
        first, s.rest = s.rest[:size], s.rest[size:]
        h.update(first)
        d.sock.sendall(first)
        left = size - len(first)
        buf = memoryview(bytearray(READ))
        while left:
            n = s.sock.recv_into(buf, min(left, READ))
            if not n:
                raise ConnectionError(f"{src} closed the connection")
            h.update(buf[:n])
            d.sock.sendall(buf[:n])
            left -= n
        if "sha256:" + h.hexdigest() != digest:
            raise ValueError(f"{digest}: the source sent other bytes")
        status, headers = d.head()
        assert status == 202, f"PATCH {status}"
        where = _path(headers["location"], dest)
        status, _, _ = d.request("PUT", f"{where}{'&' if '?' in where else '?'}digest={digest}")
        assert status == 201, f"PUT {status}"
    finally:
        s.close()
        d.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--jobs", type=int, default=4)
    args = ap.parse_args()
    src_host, src_ref = args.src.split("/", 1)
    dest_host, dest_ref = args.dest.split("/", 1)
    repo_src, tag = src_ref.rsplit(":", 1)
    repo_dest, dest_tag = dest_ref.rsplit(":", 1)
    conn = Conn(src_host)
    manifests: list[tuple[str, str, bytes]] = []  # (reference, media type, bytes), children first
    status, headers, top = conn.request("GET", f"/v2/{repo_src}/manifests/{tag}", extra=f"Accept: {ACCEPT}\r\n")
    assert status == 200, f"GET manifest {status}"
    top_type = headers["content-type"]
    blobs: dict[str, dict] = {}
    for entry in json.loads(top).get("manifests", []):
        status, headers, raw = conn.request("GET", f"/v2/{repo_src}/manifests/{entry['digest']}",
                                            extra=f"Accept: {ACCEPT}\r\n")
        assert status == 200 and "sha256:" + hashlib.sha256(raw).hexdigest() == entry["digest"]
        manifests.append((entry["digest"], headers["content-type"], raw))
        doc = json.loads(raw)
        for b in [doc["config"], *doc["layers"]]:
            blobs[b["digest"]] = b
    conn.close()
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(relay, src_host, dest_host, repo_src, repo_dest, b)
                  for b in sorted(blobs.values(), key=lambda b: -b["size"])]:
            f.result()
    conn = Conn(dest_host)
    for ref, media_type, raw in [*manifests, (dest_tag, top_type, top)]:
        status, _, _ = conn.request("PUT", f"/v2/{repo_dest}/manifests/{ref}", raw, f"Content-Type: {media_type}\r\n")
        assert status == 201, f"PUT manifest {status}"
    conn.close()


if __name__ == "__main__":
    main()
