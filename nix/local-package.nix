# registry-tools from a checkout, run by an existing Python that has its dependencies: what the
# tests use where nixpkgs is not available (Debian's Nix, no channels). Impure by design: the
# Python and its site-packages live outside the store. Real users build ../default.nix instead.
{ python, src, system ? builtins.currentSystem, shell ? "/bin/sh" }:

derivation {
  name = "registry-tools-local";
  inherit system;
  builder = shell;
  src = builtins.path { path = src; name = "registry-tools-src";
                        filter = p: t: !(builtins.elem (baseNameOf p) [ ".git" "__pycache__" "tests" "bench" ".mypy_cache"
                                                                ".ruff_cache" ".pytest_cache" ]); };
  args = [ "-c" ''
    set -eu
    mkdir="$1"; chmod="$2"
    "$mkdir" -p "$out/bin"
    printf '#!%s\nPYTHONPATH="%s" exec "%s" -m registry_tools "$@"\n' "${shell}" "$src" "${python}" \
      > "$out/bin/registry-tools"
    "$chmod" +x "$out/bin/registry-tools"
  '' "sh" "/bin/mkdir" "/bin/chmod" ];
}
