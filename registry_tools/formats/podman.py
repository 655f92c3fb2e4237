"""podman's image storage as a destination: the image streamed into `podman load`.

skopeo writes `containers-storage:` itself and nix2container's `copyToPodman` pipes an
archive into podman; this does the latter, so podman's own code takes care of its
storage (drivers, locks, layers shared with other images). The image goes as a
docker-archive on the command's standard input: nothing is left on disk, and podman
names the image by its config digest, which `podman images` shows as its ID. Options for
podman itself (`--root`, `--runroot`, `--storage-driver`) come from the caller or from
REGISTRY_TOOLS_PODMAN_ARGS (split as a shell would).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import IO, Sequence

from registry_tools.engine import Need
from registry_tools.errors import RegistryToolsError, UsageError, printable
from registry_tools.formats.destination import ArchiveDestination, ArchiveOptions
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin, LayerSupply
from registry_tools.model.tree import ManifestNode
from registry_tools.store.blobs import BlobStore
from registry_tools.workers import Workers

ARGS_VARIABLE = "REGISTRY_TOOLS_PODMAN_ARGS"


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
    return shlex.split(os.environ.get(ARGS_VARIABLE, ""))


class PodmanDestination:
    """`podman:NAME[:TAG]`: one image, loaded into podman's storage under NAME:TAG."""

    need = Need.STREAM
    holds_trees = False

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
            raise UsageError("podman: destination needs podman on PATH")
        name, _, tag = self.reference.rpartition(":")
        options = ArchiveOptions("docker-archive", name, tag)
        proc = subprocess.Popen([podman, *self.args, "load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        stdin: IO[bytes] = proc.stdin  # type: ignore[assignment]
        try:
            ArchiveDestination(self.store, options, stdin, workers=self.workers).write(supply)  # type: ignore[arg-type]
            stdin.close()
        except BrokenPipeError:
            pass  # podman stopped reading: its own message says why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        out, err = proc.communicate()
        if proc.returncode != 0:
            lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
            raise PodmanError(f"podman load failed (exit {proc.returncode}): "
                              f"{printable(lines[-1] if lines else 'no message')}")
        image = supply.image()
        return Loaded(self._loaded_name(out.decode(errors="replace")), image.config_digest)

    def _loaded_name(self, out: str) -> str:
        for line in out.splitlines():
            if line.startswith("Loaded image"):
                return printable(line.split(":", 1)[1].strip())
        return self.reference
