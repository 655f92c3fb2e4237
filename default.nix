# registry-tools built with nixpkgs' Python tooling, and its Nix functions.
#
#   nix-build -A registry-tools             # the command
#   (import ./. {}).pullImage (import ./pin.nix)
#
# Needs nixpkgs (<nixpkgs> or `pkgs`). The suite evaluates this through flake.nix with a stand-in
# for nixpkgs (tests/support/nixpkgs-standin) and tests the functions with ./nix/local-package.nix.
{ pkgs ? import <nixpkgs> { } }:

let
  py = pkgs.python3Packages;
  system = pkgs.stdenv.hostPlatform.system; # builtins.currentSystem is not there in a flake
  shell = "${pkgs.bash}/bin/sh";
  version = builtins.head (builtins.match ''.*__version__ = "([^"]+)".*'' (builtins.readFile ./registry_tools/__init__.py));
  registry-tools = py.buildPythonApplication {
    pname = "registry-tools";
    inherit version;
    pyproject = true;
    src = builtins.path {
      path = ./.;
      name = "registry-tools-src";
      filter = p: t: !(builtins.elem (baseNameOf p) [ ".git" "__pycache__" "result" ]);
    };
    build-system = [ py.setuptools ];
    dependencies = with py; [ httpx isal zstandard cryptography certifi rich argcomplete pynacl ];
    doCheck = false; # the suite needs registries, skopeo and podman: run it with ./scripts/test
    meta.mainProgram = "registry-tools";
  };
  fetchers = import ./nix/fetcher.nix { inherit registry-tools system shell; coreutils = pkgs.coreutils; };
  shells = import ./nix/shell.nix { inherit registry-tools system; runtimeShell = shell; coreutils = pkgs.coreutils; };
in
{
  inherit registry-tools;
  inherit (fetchers) pullImage assembleImage imagesFromLock;
  inherit (shells) buildNixShellImage streamNixShellImage;
  buildImage = import ./nix/build.nix { inherit registry-tools system shell; coreutils = pkgs.coreutils; };
}
