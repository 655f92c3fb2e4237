# registry-tools built with nixpkgs' Python tooling, and its Nix fetchers.
#
#   nix-build -A registry-tools             # the command
#   (import ./. {}).pullImage (import ./pin.nix)
#
# Needs nixpkgs (<nixpkgs> or `pkgs`); the suite cannot build this offline and tests the
# fetchers with ./nix/local-package.nix instead (see the README).
{ pkgs ? import <nixpkgs> { } }:

let
  py = pkgs.python3Packages;
  registry-tools = py.buildPythonApplication {
    pname = "registry-tools";
    version = "0.1.0";
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
  fetchers = import ./nix/fetcher.nix { inherit registry-tools; shell = "${pkgs.bash}/bin/sh";
                                        coreutils = pkgs.coreutils; };
in
{
  inherit registry-tools;
  inherit (fetchers) pullImage assembleImage imagesFromLock;
  buildImage = import ./nix/build.nix { inherit registry-tools; shell = "${pkgs.bash}/bin/sh";
                                        coreutils = pkgs.coreutils; };
}
