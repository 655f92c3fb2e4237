"""podman's image storage as a destination: the image streamed into `podman load`.

skopeo writes `containers-storage:` itself and nix2container's `copyToPodman` pipes an
archive into podman; this does the latter, so podman's own code takes care of its
storage (drivers, locks, layers shared with other images). The image goes as a
docker-archive on the command's standard input, and podman names it by its config
digest, which `podman images` shows as its ID.

Nothing is left on disk: `podman load` copies its standard input to a file before it
reads it, so podman runs with TMPDIR set to a directory of our own, removed when it ends
however it ends (podman's own cleanup is skipped when it is stopped). The layers' sizes
are measured before the first byte is sent: a stream, unlike a file, cannot be written
again if a compressed layer misstated its size. podman runs in a session of its own, so
Ctrl-C reaches us alone; we stop it (SIGTERM, then SIGKILL after a second).

Options for podman itself (`--root`, `--runroot`, `--storage-driver`) come from the
caller (`--podman-arg`), else from REGISTRY_TOOLS_PODMAN_ARGS (split as a shell would).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from registry_tools.engine import Need
from registry_tools.errors import RegistryToolsError, UsageError, printable
from registry_tools.formats.destination import ArchiveDestination, ArchiveOptions
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin, Image, LayerSupply
from registry_tools.model.tree import ManifestNode
from registry_tools.store.blobs import BlobStore
from registry_tools.store.layers import LocalLayers
from registry_tools.workers import Workers

ARGS_VARIABLE = "REGISTRY_TOOLS_PODMAN_ARGS"
STOP_GRACE = 1.0  # seconds podman has to stop on SIGTERM before it is killed
MESSAGE_LIMIT = 64 << 10  # the tail of podman's output read for its message


class PodmanError(RegistryToolsError):
    pass


@dataclass(frozen=True)
class Loaded:
    """What podman took: the name and tag it holds the image under, and its image ID."""

    reference: str
    image_id: Digest


def podman_args(given: Sequence[str] = ()) -> list[str]:
    """podman's own options: those given, else REGISTRY_TOOLS_PODMAN_ARGS."""
    if given:
        return list(given)
    try:
        return shlex.split(os.environ.get(ARGS_VARIABLE, ""))
    except ValueError as e:
        raise UsageError(f"{ARGS_VARIABLE}: {e}") from None


class PodmanDestination:
    """`podman:NAME[:TAG]`: one image, loaded into podman's storage under NAME:TAG."""

    need = Need.MEASURED  # every layer's size known before podman reads a byte (see the module's docstring)

    def __init__(self, store: BlobStore, reference: str, workers: Workers | None = None,
                 args: Sequence[str] = ()):
        self.store = store
        self.reference = reference
        self.workers = workers
        self.args = podman_args(args)

    def holds(self, digest: Digest) -> None:
        return None

    def write_tree(self, tree: ManifestNode, blobs: BlobOrigin) -> Loaded:
        raise UsageError(f"podman's storage holds images, not indexes: choose one platform of {tree.digest} "
                         "(--platform)")

    def write(self, supply: LayerSupply) -> Loaded:
        podman = shutil.which("podman")
        if podman is None:
            raise PodmanError("podman: destination: podman is not on PATH")
        image = supply.image()
        measured = Image(image.manifest, image.manifest_descriptor, image.config_raw, image.config,
                         supply.measured(), image.index_digest)
        name, _, tag = self.reference.rpartition(":")
        options = ArchiveOptions("docker-archive", name, tag)
        with _scratch() as tmp, open(tmp / "out", "w+b") as out, open(tmp / "err", "w+b") as err:
            try:
                proc = subprocess.Popen([podman, *self.args, "load"], stdin=subprocess.PIPE, stdout=out,
                                        stderr=err, env={**os.environ, "TMPDIR": str(tmp)},
                                        start_new_session=True)
            except OSError as e:
                raise PodmanError(f"podman could not start: {e.strerror or e}") from None
            stdin: BinaryIO = proc.stdin  # type: ignore[assignment]
            try:
                _feed(stdin, ArchiveDestination(self.store, options, stdin, workers=self.workers), measured)
                code = proc.wait()
            except BaseException:
                _stop(proc)
                _close(stdin)
                raise
            if code != 0:
                raise PodmanError(f"podman load failed (exit {code}): {_last_line(err)}")
            return Loaded(self._loaded_name(_tail(out)), measured.config_digest)

    def _loaded_name(self, out: str) -> str:
        for line in out.splitlines():
            if line.startswith("Loaded image"):
                return printable(line.split(":", 1)[1].strip())
        return self.reference


def _feed(stdin: BinaryIO, archive: ArchiveDestination, image: Image) -> None:
    """The docker-archive on podman's standard input; closed at the end, so podman reads its EOF."""
    try:
        archive.write(LocalLayers(image, archive.store))
    except BrokenPipeError:
        pass  # podman stopped reading: its own message says why
    _close(stdin)


def _close(stdin: BinaryIO) -> None:
    try:
        stdin.close()
    except BrokenPipeError:
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """podman stopped, within about a second, whatever it was doing."""
    proc.terminate()
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def _scratch() -> Iterator[Path]:
    """podman's TMPDIR, where podman's own would be (TMPDIR, else /var/tmp: room for big files),
    removed with everything podman left in it."""
    base = os.environ.get("TMPDIR") or ("/var/tmp" if os.path.isdir("/var/tmp") else None)
    tmp = Path(tempfile.mkdtemp(prefix="registry-tools-podman-", dir=base))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tail(f: BinaryIO) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - MESSAGE_LIMIT))
    return f.read().decode(errors="replace")


def _last_line(err: BinaryIO) -> str:
    """podman's message: its last `Error: ` line, else its last line; where the error lists why
    each format failed, what the docker-archive reader said (the format it was given)."""
    lines = [line.strip() for line in _tail(err).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    line = (errors or lines or ["no message"])[-1].removeprefix("Error: ")
    if line.endswith(":"):
        line += next((" " + d.removeprefix("* ") for d in lines if d.startswith("* docker-archive:")), "")
    return printable(line)
