"""Shell images: the environment `nix-shell` gives for a derivation, as an image (nixpkgs'
buildNixShellImage and streamNixShellImage).

A derivation (its `.drv` file) becomes a build spec like any other: the closure of its inputs
(its input derivations' outputs, its input sources and the shell) layered as
buildLayeredImage layers it, and one more layer holding

- `/nix-shell/rc`, the rc file nix-shell 2.8 writes: the derivation's environment exported
  (its attributes, `passAsFile` ones as `<name>Path` files in the build directory, its
  outputs' store paths, `NIX_BUILD_TOP`, `TMPDIR`, `HOME`, `NIX_STORE`), stdenv's `setup`
  sourced where there is one, `shellHook` run, the `[nix-shell:\\w]$` prompt, then `command`
  or `run` and `exit`;
- `/nix-shell/bin/buildDerivation`, on the PATH: the derivation's builder with its arguments;
- `/etc/passwd` and `/etc/group` with the build user (`nixbld`, uid and gid 1000), its home
  and the build directory (`/build`) owned by it, a writable `/tmp` and store (sticky, as
  `/tmp`: the builder creates its outputs there).

The image runs as the build user in `/build`, its `Cmd` the shell with the rc file: read by an
interactive shell (`bash --rcfile`, or `ENV` for a POSIX shell), or run as a script by a
non-interactive one (`run`), as `nix-shell --command` and `--run` do.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from registry_tools.builder.closure import parse_graph
from registry_tools.builder.derivation import Derivation, read_derivation
from registry_tools.builder.pack import Owner
from registry_tools.builder.plan import FAKE_GROUP, FAKE_PASSWD
from registry_tools.builder.spec import BuildSpec, ClosureInput
from registry_tools.errors import RegistryToolsError, UsageError
from registry_tools.model import reference as refs
from registry_tools.model.digest import nix32_encode
from registry_tools.model.platform import Platform, declared

BUILD_DIR = "/build"  # Nix's sandbox build directory (NIX_BUILD_TOP)
RC = "/nix-shell/rc"
BIN = "/nix-shell/bin"
SHELLS = ("bash", "sh", "ash", "dash", "ksh", "mksh", "zsh")  # a builder by these names is the default shell
PROMPT = r"\n\[\033[1;32m\][nix-shell:\w]\$\[\033[0m\] "
# Nix's CPU names where the OCI name differs (the others, x86_64 and aarch64 included, are read by
# model.platform as they are)
NIX_CPUS = {"i686": ("386", ""), "armv6l": ("arm", "v6"), "armv7l": ("arm", "v7"), "powerpc64le": ("ppc64le", "")}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ShellImageError(RegistryToolsError):
    """The derivation's inputs cannot be read from this machine's store."""


@dataclass(frozen=True)
class ShellOptions:
    """buildNixShellImage's arguments, and where the closure of the derivation's inputs comes from."""

    drv: str  # the .drv file
    graph: str | None = None  # the inputs' closure (exportReferencesGraph, closureInfo, nix path-info --json)
    name: str | None = None  # default: the derivation's name + "-env"
    tag: str | None = None  # default: a hash of the image's config
    uid: int = 1000
    gid: int = 1000
    home: str = BUILD_DIR
    shell: str | None = None  # default: the derivation's builder, if it is a shell
    command: str | None = None  # run in the interactive shell (nix-shell --command)
    run: str | None = None  # run in a non-interactive shell (nix-shell --run)


@contextmanager
def shell_spec(options: ShellOptions) -> Iterator[BuildSpec]:
    """The build spec of the shell image; its files live until the context ends."""
    drv = read_derivation(options.drv)
    _check(drv, options)
    shell = _shell(drv, options.shell)
    name = options.name or f"{drv.name}-env"
    try:
        refs.parse_normalized(name)
    except UsageError as e:
        whose = "" if options.name else " (the derivation's name and -env)"
        raise UsageError(f"the image name {name!r}{whose}: {e}; give another with --name") from None
    with tempfile.TemporaryDirectory(prefix="registry-tools-shell-") as work:
        closure = _closure(drv, shell, options.graph, Path(work))
        env = _environment(drv, shell, options.home)
        root = Path(work) / "root"
        _write_tree(root, drv, shell, env, options)
        owner = Owner(options.uid, options.gid, "nixbld" if options.uid else "root",
                      "nixbld" if options.gid else "root")
        yield BuildSpec(name=name, tag=options.tag, closure=closure, contents=[root],
                        config=_config(shell, env, options), platform=_platform(drv.system), fake_nss=True,
                        bin_sh=shell, owners={BUILD_DIR.strip("/"): owner, options.home.strip("/"): owner},
                        base_dir=Path(work))


def _check(drv: Derivation, options: ShellOptions) -> None:
    if "__json" in drv.env:
        raise UsageError(f"{drv.path} uses __structuredAttrs, which shell images do not support (nor does nixpkgs)")
    if options.command is not None and options.run is not None:
        raise UsageError("give command or run, not both (as nix-shell's --command and --run)")
    for what, value in (("uid", options.uid), ("gid", options.gid)):
        if not 0 <= value < 2 ** 31:
            raise UsageError(f"{what} must be between 0 and 2147483647")
    home = options.home
    if not home.startswith("/") or ".." in home.split("/") or home.strip("/") == "":
        raise UsageError(f"the home directory {home!r} must be an absolute path below / without '..'")


def _shell(drv: Derivation, given: str | None) -> str:
    """The shell the image starts: given, or the builder when it is a shell; a program in the store."""
    shell = given or drv.builder
    if given is None and os.path.basename(shell) not in SHELLS:
        raise UsageError(f"the builder of {drv.path} ({shell}) is not a shell: give the shell to start "
                         "(--shell, a shell in the Nix store)")
    if not shell.startswith(drv.store_dir + "/") or ".." in shell.split("/"):
        raise UsageError(f"the shell {shell} is not in {drv.store_dir}: the image holds the store paths of the "
                         "derivation's inputs and of the shell, nothing else of this machine")
    return shell


def _platform(system: str) -> Platform:
    cpu, _, kernel = system.rpartition("-")
    if not cpu or not kernel:
        raise UsageError(f"the derivation's system {system!r} is not CPU-OS (x86_64-linux, say)")
    arch, variant = NIX_CPUS.get(cpu, (cpu, ""))
    return declared(kernel, arch, variant, bool(variant))


def _store_path(path: str, store_dir: str) -> str:
    """The store path a path in the store is in (/nix/store/HASH-NAME of /nix/store/HASH-NAME/bin/sh)."""
    return store_dir + "/" + path[len(store_dir) + 1:].split("/", 1)[0]


def _input_paths(drv: Derivation) -> list[str]:
    """What the builder may use: its input derivations' outputs (read from their .drv files, which are
    wherever the derivation is) and its input sources."""
    paths = set(drv.input_srcs)
    for drv_path, outputs in drv.input_drvs.items():
        built = read_derivation(drv_path).outputs
        for output in outputs:
            if not built.get(output):
                raise UsageError(f"{drv_path} has no output {output!r} with a known path (content-addressed "
                                 "and floating outputs are not supported, as in nixpkgs)")
            paths.add(built[output])
    return sorted(paths)


def _closure(drv: Derivation, shell: str, graph: str | None, work: Path) -> ClosureInput:
    """The closure of the inputs and the shell: from the graph given (what else it holds is left
    out), else from this machine's Nix store (`nix path-info`)."""
    store = drv.store_dir
    roots = sorted(set(_input_paths(drv)) | {_store_path(shell, store)})
    if graph is not None:
        try:
            g = parse_graph(Path(graph).read_text(encoding="utf-8"), graph)
        except OSError as e:
            raise UsageError(f"cannot read the graph {graph}: {e.strerror}") from None
        missing = [r for r in roots if r not in g.refs]
        if missing:
            raise UsageError(f"the graph {graph} does not hold {missing[0]}, an input of {drv.path} (or the shell)")
        wanted = set().union(*(g.closure(r) for r in roots))
        return ClosureInput(Path(graph), tuple(roots), store, Path(store), tuple(sorted(set(g.paths) - wanted)))
    for r in roots:
        if not os.path.lexists(r):
            raise ShellImageError(f"{r}, an input of {drv.path}, is not in the store: build the inputs first "
                                  "(nix-store --realise on the .drv files it names), or give --graph")
    nix = shutil.which("nix")
    if nix is None:
        raise ShellImageError("reading the closure of the inputs needs Nix (nix path-info) or --graph FILE")
    res = subprocess.run([nix, "--extra-experimental-features", "nix-command", "path-info", "--json",
                          "--recursive", *roots], capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
        raise ShellImageError(f"nix path-info could not read the closure of the inputs: {last}")
    path = work / "closure.json"
    path.write_text(res.stdout)
    return ClosureInput(path, tuple(roots), store, Path(store))


def _attr_file(name: str) -> str:
    """Where Nix puts a passAsFile attribute in the build directory: .attr- and the Nix base-32
    sha256 of its name."""
    return ".attr-" + nix32_encode(hashlib.sha256(name.encode()).digest())


def _environment(drv: Derivation, shell: str, home: str) -> dict[str, str]:
    """The builder's environment as Nix 2.8 sets it in its sandbox (and nixpkgs in the image): the
    derivation's attributes (passAsFile ones as files), then the build directory's variables."""
    env = {"PATH": f"{os.path.dirname(shell)}:{BIN}", "HOME": home, "NIX_STORE": drv.store_dir,
           "NIX_BUILD_CORES": "1"}
    as_files = set(drv.env.get("passAsFile", "").split())
    for name, value in drv.env.items():
        if name in as_files:
            env[name + "Path"] = f"{BUILD_DIR}/{_attr_file(name)}"
        elif name and "=" not in name and "\0" not in name:
            env[name] = value
    for name in ("NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"):
        env[name] = BUILD_DIR
    env["TERM"] = "xterm-256color"
    return env


def _rc_file(drv: Derivation, shell: str, env: dict[str, str], options: ShellOptions) -> str:
    """nix-shell's rc file (Nix 2.8's, as nixpkgs' image writes it), for bash and POSIX shells alike."""
    q = shlex.quote
    exports = [f"export {k}={q(v)}" for k, v in sorted(env.items())
               if _IDENTIFIER.match(k) and k not in ("PATH", "PWD")]
    own_path = drv.env.get("PATH", "")  # the derivation's own PATH comes after the shell's and setup's
    lines = [f"# nix-shell for {drv.path}", "unset ENV", *exports, f"_nix_shell_path={q(own_path)}", "unset PATH",
             "dontAddDisableDepTrack=1",
             'if [ -n "${stdenv-}" ] && [ -e "$stdenv/setup" ]; then . "$stdenv/setup"; fi',
             f'export PATH={q(env["PATH"])}${{PATH:+:$PATH}}${{_nix_shell_path:+:$_nix_shell_path}}',
             "unset _nix_shell_path", f"SHELL={q(shell)}", f"BASH={q(shell)}", "set +e",
             'case $- in *i*) if [ -z "${NIX_SHELL_PRESERVE_PROMPT-}" ]; then PS1=' + q(PROMPT) + "; fi;; esac",
             'case "$(type runHook 2>/dev/null)" in',
             "  *function*) runHook shellHook ;;", '  *) eval "${shellHook-}" ;;', "esac",
             "unset NIX_ENFORCE_PURITY",
             'if [ -n "${BASH_VERSION-}" ]; then shopt -u nullglob; shopt -s execfail; fi']
    after = options.command if options.command is not None else options.run
    if after is not None:
        lines += [after, "exit"]
    return "\n".join(lines) + "\n"


def _config(shell: str, env: dict[str, str], options: ShellOptions) -> dict[str, object]:
    if options.run is not None:
        cmd = [shell, RC]
    elif os.path.basename(shell) == "bash":
        cmd = [shell, "--rcfile", RC, "-i"]
    else:  # a POSIX shell reads $ENV when interactive; the rc file unsets it for what it starts
        cmd = [shell, "-c", f'ENV={RC}; export ENV; exec "$0" -i', shell]
    return {"User": f"{options.uid}:{options.gid}", "WorkingDir": BUILD_DIR, "Cmd": cmd,
            "Env": [f"{k}={v}" for k, v in sorted(env.items())]}


def _write_tree(root: Path, drv: Derivation, shell: str, env: dict[str, str], options: ShellOptions) -> None:
    """The shell layer's files (the owners of the build and home directories are the spec's)."""
    def put(rel: str, text: str, mode: int = 0o644) -> None:
        p = root / rel.strip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    user = f"nixbld:x:{options.uid}:{options.gid}:Build user:{options.home}:{shell}\n"
    put("etc/passwd", FAKE_PASSWD + (user if options.uid else ""))
    put("etc/group", FAKE_GROUP + (f"nixbld:!:{options.gid}:\n" if options.gid else ""))
    put(RC, _rc_file(drv, shell, env, options))
    builder = " ".join(shlex.quote(a) for a in (drv.builder, *drv.args))
    put(f"{BIN}/buildDerivation", f"#!{shell}\nexec {builder}\n", 0o755)
    for name in sorted(set(drv.env.get("passAsFile", "").split()) & set(drv.env)):
        put(f"{BUILD_DIR}/{_attr_file(name)}", drv.env[name])
    writable = {"tmp", drv.store_dir.strip("/")}  # sticky, as /tmp: the builder makes its outputs in the store
    for rel in (BUILD_DIR, options.home, *writable):
        (root / rel.strip("/")).mkdir(parents=True, exist_ok=True)
    for p in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if p.is_dir():  # whatever the umask
            p.chmod(0o1777 if str(p.relative_to(root)) in writable else 0o755)
        os.utime(p, (1, 1), follow_symlinks=False)  # the same layer key every time
    os.utime(root, (1, 1))

