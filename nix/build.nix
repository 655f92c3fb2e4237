# buildLayeredImage-style arguments turned into a registry-tools build spec, and an app that
# builds and pushes the image straight to a registry: no image tarball is ever written into
# the Nix store (nixpkgs#175486).
#
#   image = (import ./nix/build.nix { registry-tools = …; }) {
#     name = "team/app"; tag = "1.0";
#     contents = [ pkgs.hello ];                      # their closures become layers; their trees merge at /
#     config = { Cmd = [ "${pkgs.hello}/bin/hello" ]; };
#   };
#   # image.spec: a store path holding spec.json and the closure's reference graph
#   # image.push: bin/push-image REGISTRY/REPO[:TAG] runs `registry-tools build spec.json --push …`
#
# The reference graph comes from Nix's exportReferencesGraph (the registration format, which
# `build` reads): every store path of the contents' closures, and of what the config names,
# is in a layer.
{ registry-tools, system ? builtins.currentSystem, shell ? "/bin/sh", coreutils ? null }:

{ name
, tag ? null
, contents ? [ ]
, config ? { }
, maxLayers ? 100
, created ? null
, architecture ? null
, extraCommands ? ""
, fakeRootCommands ? ""
, compressor ? "gz"
, annotations ? { }
}:

let
  path = if coreutils == null then "/usr/bin:/bin" else "${coreutils}/bin";
  # the config as a store file: its references are every store path the config names, so their
  # closures join the contents' (as buildLayeredImage includes the config's closure); the file
  # itself is left out of the image (closure.exclude)
  configFile = derivation {
    name = "${safe}-config.json";
    inherit system;
    builder = shell;
    PATH = path;
    configJson = builtins.toJSON config;
    passAsFile = [ "configJson" ];
    args = [ "-c" "cp \"$configJsonPath\" \"$out\"" ];
  };
  roots = contents ++ [ configFile ];
  graphs = builtins.concatLists (builtins.genList (i: [ "graph${toString i}" (builtins.elemAt roots i) ])
                                                  (builtins.length roots));
  spec = { inherit name config maxLayers compressor annotations;
           closure = { graph = "graph"; exclude = [ "${configFile}" ]; };
           contents = map toString contents; }
    // (if tag == null then { } else { inherit tag; })
    // (if created == null then { } else { inherit created; })
    // (if architecture == null then { } else { inherit architecture; })
    // (if extraCommands == "" then { } else { inherit extraCommands; })
    // (if fakeRootCommands == "" then { } else { inherit fakeRootCommands; });
  safe = builtins.replaceStrings [ "/" ":" ] [ "-" "-" ] name;

  specDrv = derivation {
    name = "${safe}-registry-tools-spec";
    inherit system;
    builder = shell;
    PATH = path;
    exportReferencesGraph = graphs;
    specJson = builtins.toJSON spec;
    passAsFile = [ "specJson" ];
    args = [ "-c" ''
      set -eu
      mkdir -p "$out"
      if [ -n "$(ls graph* 2>/dev/null)" ]; then cat graph* > "$out/graph"; else : > "$out/graph"; fi
      cp "$specJsonPath" "$out/spec.json"
    '' ];
  };

  push = derivation {
    name = "push-${safe}";
    inherit system;
    builder = shell;
    PATH = path;
    args = [ "-c" ''
      set -eu
      mkdir -p "$out/bin"
      printf '#!%s\nexec "%s" build "%s" --push "$@"\n' "${shell}" "${registry-tools}/bin/registry-tools" \
        "${specDrv}/spec.json" > "$out/bin/push-image"
      chmod +x "$out/bin/push-image"
    '' ];
  };
in
{
  spec = specDrv;
  inherit push;
}
