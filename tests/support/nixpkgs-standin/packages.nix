# The packages default.nix names, as this machine has them (see flake.nix).
{ system, python }:

let
  # A tool of this machine where nixpkgs gives a store path: "${bash}/bin/sh" is /usr/bin/sh.
  host = prefix: { outPath = prefix; };
  # A Python dependency: the machine's Python has it installed; nothing to build.
  module = pname: { inherit pname; };
in
{
  inherit system;
  stdenv.hostPlatform.system = system;
  bash = host "/usr";
  coreutils = host "/usr";
  python3Packages = {
    setuptools = module "setuptools";
    httpx = module "httpx";
    isal = module "isal";
    zstandard = module "zstandard";
    cryptography = module "cryptography";
    certifi = module "certifi";
    rich = module "rich";
    argcomplete = module "argcomplete";
    pynacl = module "pynacl";
    # bin/<mainProgram> runs `python -m <pname with _>` over the source.
    buildPythonApplication = { pname, version, src, meta ? { }, ... }:
      let module = builtins.replaceStrings [ "-" ] [ "_" ] pname; program = meta.mainProgram or pname; in
      derivation {
        name = "${pname}-${version}";
        inherit system src;
        builder = "/bin/sh";
        args = [ "-c" ''
          set -eu
          /bin/mkdir -p "$out/bin"
          printf '#!/bin/sh\nPYTHONPATH="%s" exec "%s" -m %s "$@"\n' "$src" "${python}" "${module}" \
            > "$out/bin/${program}"
          /bin/chmod +x "$out/bin/${program}"
        '' ];
      } // { inherit meta version; };
  };
}
