# nixpkgs' buildNixShellImage and streamNixShellImage over `registry-tools build-shell`: an image
# with the environment nix-shell gives for a derivation, in which `buildDerivation` builds it.
# No nixpkgs needed.
#
#   shell = import ./nix/shell.nix { registry-tools = …; };
#   image = shell.buildNixShellImage { drv = pkgs.hello; };       # a docker-archive: podman load -i
#   stream = shell.streamNixShellImage { drv = pkgs.hello; };     # a program: ./result | podman load
#   # image.imageName, image.imageTag: what the archive is tagged
#
# Arguments, as nixpkgs documents them: drv; name (drv.name + "-env"); tag (a hash of the
# arguments: the derivation, its inputs' closure and every option, known at evaluation); uid and
# gid (1000); homeDirectory ("/build"); shell (a program in the store; default: the builder, when
# it is a shell); command (run in the interactive shell, as nix-shell --command) or run (in a
# non-interactive one, as --run).
#
# The inputs' closure comes from exportReferencesGraph: a file naming what the derivation's
# attributes name (its input derivations' outputs and input sources) and the shell references
# exactly those paths, and the graph of it is their closure; build-shell keeps only what the
# inputs reach.
{ registry-tools, system ? builtins.currentSystem, runtimeShell ? "/bin/sh", coreutils ? null }:

let
  path = if coreutils == null then "/usr/bin:/bin" else "${coreutils}/bin";
  safe = builtins.replaceStrings [ "/" ":" ] [ "-" "-" ];
  escape = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  optional = cond: list: if cond then list else [ ];

  graphOf = drv: shell:
    let
      inputs = derivation {
        name = "${safe drv.name}-shell-inputs";
        inherit system;
        builder = runtimeShell;
        PATH = path;
        inputs = builtins.toJSON [ drv.drvAttrs shell ];
        passAsFile = [ "inputs" ];
        args = [ "-c" "cp \"$inputsPath\" \"$out\"" ];
      };
    in derivation {
      name = "${safe drv.name}-shell-graph";
      inherit system;
      builder = runtimeShell;
      PATH = path;
      exportReferencesGraph = [ "graph" inputs ];
      args = [ "-c" "cp graph \"$out\"" ];
    };

  common = { drv, name ? drv.name + "-env", tag ? null, uid ? 1000, gid ? 1000, homeDirectory ? "/build"
           , shell ? null, command ? null, run ? null }:
    if command != null && run != null
    then throw "streamNixShellImage: give command or run, not both"
    else
      let
        options = [ "--name" name "--uid" (toString uid) "--gid" (toString gid) "--home-directory" homeDirectory ]
          ++ optional (shell != null) [ "--shell" "${shell}" ]
          ++ optional (command != null) [ "--command" command ]
          ++ optional (run != null) [ "--run" run ];
        given = [ (builtins.unsafeDiscardOutputDependency drv.drvPath) "--graph" "${graphOf drv shell}" ] ++ options;
        imageTag = if tag != null then tag
                   else builtins.substring 0 32 (builtins.hashString "sha256"
                          (builtins.unsafeDiscardStringContext (builtins.toJSON given)));
      in {
        imageName = name;
        inherit imageTag;
        argv = [ "${registry-tools}/bin/registry-tools" "build-shell" ] ++ given ++ [ "--tag" imageTag ];
      };
in
{
  # A program that streams the image (an uncompressed docker-archive) to stdout.
  streamNixShellImage = args:
    let c = common args; in
    derivation {
      name = "stream-${safe c.imageName}";
      inherit system;
      builder = runtimeShell;
      PATH = path;
      script = "#!${runtimeShell}\nexec ${builtins.concatStringsSep " " (map escape c.argv)} --stream \"$@\"\n";
      passAsFile = [ "script" ];
      args = [ "-c" "cp \"$scriptPath\" \"$out\" && chmod +x \"$out\"" ];
    } // { inherit (c) imageName imageTag; };

  # The image as a docker-archive in the store.
  buildNixShellImage = args:
    let c = common args; in
    derivation {
      name = "${safe c.imageName}.tar";
      inherit system;
      builder = runtimeShell;
      PATH = path;
      args = [ "-c" "export REGISTRY_TOOLS_CACHE=\"$TMPDIR/registry-tools-cache\"; exec \"$@\" --quiet -o \"$out\"" "sh" ]
        ++ c.argv;
    } // { inherit (c) imageName imageTag; };
}
