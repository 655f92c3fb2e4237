# A stand-in for nixpkgs with just what registry-tools' default.nix uses, so the suite can evaluate
# flake.nix and `nix run` it offline (Debian's Nix, no nixpkgs):
#
#   nix run --override-input nixpkgs path:tests/support/nixpkgs-standin . -- --help
#
# buildPythonApplication makes a program that runs the package's source with this machine's
# Python (the path in ./python, written by the test; else /usr/bin/python3), which must have the
# dependencies installed, as ../../../nix/local-package.nix does. Impure by design; never for users.
{
  description = "registry-tools' tests: a stand-in for nixpkgs";

  outputs = { self }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
      python = if builtins.pathExists ./python
               then builtins.head (builtins.match "([^\n]*)\n?" (builtins.readFile ./python))
               else "/usr/bin/python3";
    in
    {
      lib = { inherit genAttrs; };
      legacyPackages = genAttrs systems (system: import ./packages.nix { inherit system python; });
    };
}
