"""build: one image or a multi-platform index, to a file, a layout, a stream or a registry, with an
SBOM if asked; build-shell: the image of a derivation's nix-shell environment, to the same."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from registry_tools.cli.common import emit, note, report_push, session_of
from registry_tools.cli.options import add_common, complete_platforms
from registry_tools.errors import UsageError
from registry_tools.words import count, size


def _outputs(p: Any) -> None:
    """Where a built image goes: a file, a layout, a stream or a registry."""
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="ARCHIVE", help="write a docker-archive file")
    out.add_argument("--oci", metavar="DIR", help="write an OCI image layout directory")
    out.add_argument("--stream", action="store_true",
                     help="stream an uncompressed docker-archive to stdout (streamLayeredImage)")
    out.add_argument("--push", metavar="REF", help="push straight to a registry (no tarball is written)")


def _build(sub: Any) -> None:
    p = sub.add_parser("build", help="build a layered image from a JSON spec (buildLayeredImage)")
    p.add_argument("spec", metavar="SPEC.json", help="the build spec")
    _outputs(p)
    p.add_argument("--format", choices=("docker-archive", "oci-archive"), default=None,
                   help="what -o writes (default docker-archive; a spec naming several platforms needs "
                        "oci-archive: a docker-archive holds one image)")
    complete_platforms(p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                       help="build only this platform of a spec that names several"))
    p.add_argument("--sbom", metavar="FILE",
                   help="also write an SPDX 2.3 SBOM of the image (every store path of the closure with its name, "
                        "version and NAR hash; every plain path); with --push, attach it to the pushed image as a "
                        "referrer (application/spdx+json)")
    add_common(p)


def _build_shell(sub: Any) -> None:
    p = sub.add_parser("build-shell", help="build an image with the environment nix-shell gives for a derivation "
                                           "(buildNixShellImage)",
                       description="The image holds the closure of the derivation's inputs, layered as build\n"
                                   "layers it, and /nix-shell/rc, the rc file nix-shell writes: the derivation's\n"
                                   "environment (its attributes, outputs, NIX_BUILD_TOP, TMPDIR, HOME, NIX_STORE),\n"
                                   "shellHook and the nix-shell prompt. buildDerivation, on the PATH, runs the\n"
                                   "builder with its arguments. The image runs as the build user (nixbld) in /build;\n"
                                   "/build, /tmp and the store (where the builder makes its outputs) are writable.")
    p.add_argument("drv", metavar="DRV", help="the derivation: a .drv file (nix-instantiate prints its path)")
    _outputs(p)
    p.add_argument("--format", choices=("docker-archive", "oci-archive"), default=None,
                   help="what -o writes (default docker-archive)")
    p.add_argument("--graph", metavar="FILE",
                   help="the closure of the derivation's inputs (exportReferencesGraph, closureInfo's "
                        "registration, nix path-info --json); without it, read from this machine's store "
                        "with nix path-info (the inputs must be built)")
    p.add_argument("--name", help="the image's name (default: the derivation's name and -env)")
    p.add_argument("--tag", help="the image's tag (default: a hash of the image's config)")
    p.add_argument("--uid", type=int, default=1000, help="the build user's uid, which the image runs as (1000)")
    p.add_argument("--gid", type=int, default=1000, help="the build user's gid (1000)")
    p.add_argument("--home-directory", metavar="DIR", default="/build", help="the build user's home (/build)")
    p.add_argument("--shell", metavar="PATH",
                   help="the shell the image starts, a program in the Nix store (default: the derivation's "
                        "builder, if it is a shell); bash reads the rc file with --rcfile, a POSIX shell from ENV")
    then = p.add_mutually_exclusive_group()
    then.add_argument("--command", metavar="CMD", dest="shell_command",
                      help="run CMD in the interactive shell, then exit (nix-shell --command)")
    then.add_argument("--run", metavar="CMD", dest="shell_run",
                      help="run CMD in a non-interactive shell, then exit (nix-shell --run)")
    add_common(p)


def cmd_build(args: argparse.Namespace) -> int:
    from registry_tools.builder.multispec import MultiSpec

    spec = _checked_spec(args)
    if isinstance(spec, MultiSpec):
        return _build_index(args, spec)
    return _build_one(args, spec, args.sbom)


def cmd_build_shell(args: argparse.Namespace) -> int:
    from registry_tools.builder.shell import ShellOptions, shell_spec

    _check_outputs(args)
    options = ShellOptions(args.drv, args.graph, args.name, args.tag, args.uid, args.gid, args.home_directory,
                           args.shell, args.shell_command, args.shell_run)
    with shell_spec(options) as spec:
        return _build_one(args, spec, None)


def _build_index(args: argparse.Namespace, multi) -> int:
    from registry_tools.api.build import IndexBuildResult, build
    from registry_tools.api.push import build_and_push_index

    if args.push:
        with session_of(args) as session:
            pushed, built = build_and_push_index(multi, args.push, session)
            note(args, f"built {count(len(built.images), 'platform')} ({', '.join(built.images)}): "
                       f"{count(built.layers_packed, 'layer')} packed ({size(built.bytes_packed)})")
        report_push(args, pushed)
        return 0
    fmt = "oci" if args.oci else (args.format or "docker-archive")
    with session_of(args) as session:
        result = build(multi, output=args.output, oci=args.oci, stream=sys.stdout.buffer if args.stream else None,
                       session=session, format=args.format or "docker-archive")
    assert isinstance(result, IndexBuildResult)
    where = args.output or args.oci or "stdout"
    if args.json:
        emit({"output": where, "format": fmt, "reference": f"{result.name}:{result.tag}",
              "indexDigest": str(result.index_digest), "images": {p: str(d) for p, d in result.images.items()},
              "layersPacked": result.layers_packed, "bytesPacked": result.bytes_packed})
        return 0
    note(args, f"built {result.name}:{result.tag} (index {result.index_digest}: {', '.join(result.images)}; "
               f"{count(result.layers_packed, 'layer')} packed) to {where}")
    print(f"{result.name}:{result.tag}")
    return 0


def _build_one(args: argparse.Namespace, spec, sbom: str | None) -> int:
    """One image to a file, a layout, a stream or a registry (and its SBOM, if asked)."""
    from registry_tools.api.build import BuildResult, build
    from registry_tools.api.push import build_and_push

    if args.push:
        with session_of(args) as session:
            pushed, _ = build_and_push(spec, args.push, session)
            if sbom:
                _sbom(sbom, spec, pushed, session, args)
        report_push(args, pushed)
        return 0
    fmt = "oci" if args.oci else (args.format or "docker-archive")
    with session_of(args) as session:
        result = build(spec, output=args.output, oci=args.oci, stream=sys.stdout.buffer if args.stream else None,
                       session=session, format=args.format or "docker-archive")
    assert isinstance(result, BuildResult)
    where = args.output or args.oci or "stdout"
    if sbom:
        from registry_tools.api.build import write_sbom

        write_sbom(spec, result.tag, sbom)
    digest = f", manifest {result.manifest_digest}" if result.manifest_digest else ""
    if args.json and not args.stream:
        emit({"output": where, "format": fmt, "reference": f"{result.name}:{result.tag}",
              "configDigest": str(result.config_digest),
              "manifestDigest": str(result.manifest_digest) if result.manifest_digest else None,
              "layers": result.layers})
        return 0
    note(args, f"built {result.name}:{result.tag} ({count(result.layers, 'layer')}, config {result.config_digest}"
               f"{digest}) to {where}")
    if not args.stream:
        print(f"{result.name}:{result.tag}")
    return 0


def _checked_spec(args: argparse.Namespace):
    """The spec (one platform of it with --platform), and the options checked against it."""
    from registry_tools.builder.multispec import MultiSpec, load_spec
    from registry_tools.model.platform.values import parse as parse_platform

    spec = load_spec(args.spec)
    if args.platform:
        if not isinstance(spec, MultiSpec):
            raise UsageError("--platform picks one platform of a spec that names several (\"platforms\"); this "
                             "one builds one image (set its os/architecture/variant)")
        spec = spec.only(parse_platform(args.platform))
    _check_outputs(args)
    if args.sbom and isinstance(spec, MultiSpec):
        raise UsageError("--sbom describes one image: build one platform of this spec with --platform")
    return spec


def _check_outputs(args: argparse.Namespace) -> None:
    if args.format and not args.output:
        raise UsageError("--format says what -o writes; --oci writes a layout, --stream a docker-archive")
    if args.stream and args.json:
        raise UsageError("--stream writes the archive to stdout; --json cannot go there too")
    if args.stream and sys.stdout.isatty():
        raise UsageError("--stream writes a tar archive: send it to a pipe or a file, not a terminal")


def _sbom(path: str, spec, pushed, session, args: argparse.Namespace) -> None:
    """The SBOM written to its file, then attached to the pushed manifest as a referrer."""
    from registry_tools.api.artifacts import attach
    from registry_tools.api.build import write_sbom
    from registry_tools.builder.sbom import SPDX_MEDIA_TYPE

    name, _, tag = pushed.reference.rpartition(":")
    write_sbom(spec, tag, path)
    attached = attach(f"{name}@{pushed.digest}", SPDX_MEDIA_TYPE, [path], session=session)
    note(args, f"attached the SBOM {path} as {attached.digest}")


COMMANDS = {"build": (_build, cmd_build), "build-shell": (_build_shell, cmd_build_shell)}
