"""A real registry (Debian's docker-registry, distribution 2.8) on a free loopback port."""
from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """Starts `docker-registry serve` with its storage and log under `root`."""

    def __init__(self, root: str | os.PathLike[str], auth: str = "", extra_config: str = "", delete: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = self.root / "registry.log"
        self.config_path = self.root / "config.yml"
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: {'true' if delete else 'false'}\n"
            f"http:\n  addr: {self.host}\n"
            + auth + extra_config
        )
        self.proc: subprocess.Popen | None = None

    def start(self, scheme: str = "http", ca: Path | None = None,
              client: tuple[Path, Path] | None = None) -> "LocalRegistry":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.config_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            try:
                verify = ssl.create_default_context(cafile=str(ca)) if ca else True
                if client is not None and not isinstance(verify, bool):
                    verify.load_cert_chain(str(client[0]), str(client[1]))
                httpx.get(f"{scheme}://{self.host}/v2/", timeout=1, verify=verify)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def statuses_since(self, offset: int) -> list[tuple[str, str, int]]:
        """(method, uri, HTTP status) of every response the registry logged since `offset`."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out = []
        for line in text.splitlines():
            m = re.search(r'http\.request\.method=(\S+)', line)
            u = re.search(r'http\.request\.uri=(?:"([^"]+)"|(\S+))', line)
            st = re.search(r'http\.response\.status=(\d+)', line)
            if m and u and st:
                out.append((m.group(1), u.group(1) or u.group(2), int(st.group(1))))
        return out

    def requests_since(self, offset: int) -> list[tuple[str, str]]:
        """(method, uri) of every request the registry completed since `offset` in its log."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out = []
        for line in text.splitlines():
            if "response completed" not in line:
                continue
            m = re.search(r'http\.request\.method=(\S+)', line)
            u = re.search(r'http\.request\.uri=(?:"([^"]+)"|(\S+))', line)
            if m and u:
                out.append((m.group(1), u.group(1) or u.group(2)))
        return out


def skopeo_push_layout(layout: str | os.PathLike[str], tag: str, dest: str, all_images: bool = True,
                       creds: str | None = None) -> None:
    cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests"]
    if creds:
        cmd += ["--dest-creds", creds]
    if all_images:
        cmd.append("--all")
    source = f"dir:{layout}" if (Path(layout) / "manifest.json").exists() else f"oci:{layout}:{tag}"
    cmd += [source, f"docker://{dest}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def skopeo_push_layout_tls(layout: str | os.PathLike[str], tag: str, dest: str, ca: Path) -> None:
    """Push to a TLS registry, trusting only `ca` (skopeo reads ca.crt from --dest-cert-dir)."""
    cert_dir = Path(ca).parent / "skopeo-certs"
    cert_dir.mkdir(exist_ok=True)
    (cert_dir / "ca.crt").write_bytes(Path(ca).read_bytes())
    subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-cert-dir", str(cert_dir),
                    f"oci:{layout}:{tag}", f"docker://{dest}"], check=True, capture_output=True, text=True)


def require_tools(*tools: str) -> None:
    """Fail (not skip) when a tool the suite needs is missing: CI installs them all."""
    import pytest

    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `bash .ci/run` or install Debian's packages first",
                    pytrace=False)
