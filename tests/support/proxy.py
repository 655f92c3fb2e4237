"""Debian's tinyproxy on a free loopback port, with its log read back: which requests went through it."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .registry import free_port


class TinyProxy:
    def __init__(self, root: Path, user: str = "", password: str = ""):
        if shutil.which("tinyproxy") is None:
            import pytest

            pytest.fail("tinyproxy is missing: run `bash .ci/run` (Debian's tinyproxy)", pytrace=False)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = root / "tinyproxy.log"
        auth = f"BasicAuth {user} {password}\n" if user else ""
        (root / "tinyproxy.conf").write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{self.log}\"\nLogLevel Info\n"
            f"MaxClients 50\nAllow 127.0.0.1\nDisableViaHeader Yes\n{auth}")
        self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(root / "tinyproxy.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tinyproxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """Each request line the proxy logged: `GET http://host:port/path HTTP/1.1`, `CONNECT host:port …`."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return re.findall(r"Request \(file descriptor \d+\): (.*)", text)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
