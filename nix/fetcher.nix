# registry-tools as a Nix fetcher: pullImage, assembleImage and imagesFromLock, with no nixpkgs needed.
#
#   fetchers = import ./nix/fetcher.nix { registry-tools = <a package with bin/registry-tools>; };
#   image = fetchers.pullImage (import ./pin.nix);      # what `registry-tools prefetch` printed
#   image = fetchers.assembleImage (import ./pin.nix);  # what `registry-tools prefetch --layers` printed
#   images = fetchers.imagesFromLock ./images.lock.json; # one derivation per pin of a lock (either kind)
#
# pullImage takes nixpkgs' dockerTools.pullImage arguments and everything our pins carry
# (manifestDigest, variant, format, platform = "all"), and is a fixed-output derivation
# running `registry-tools pull`: Nix checks the hash (flat for archives, recursive for an
# OCI layout directory). The pull uses a cache of its own inside the build directory.
# Credentials, CAs and proxies come, as for nixpkgs' fetchers, from impure environment
# variables of the caller: REGISTRY_AUTH_FILE, DOCKER_CONFIG, NIX_SSL_CERT_FILE,
# SSL_CERT_FILE, REGISTRY_TOOLS_CERTS_D and the proxy variables (a file they name must be
# readable by the build: no sandbox, or a sandbox path).
#
# assembleImage takes a layer pin (every manifest, config and layer by its digest). Each
# blob is a fixed-output derivation of its own (flat, its hash the registry's digest, named
# by the digest alone: two images that share a layer share its store path) running
# `registry-tools fetch-blob`, so Nix itself checks every blob; an ordinary derivation then
# runs `registry-tools assemble --blobs` over them, with no network, into the same bytes
# `pull` writes (the same sha256 as the full pin). The lock is read at evaluation time:
# nothing is imported from a derivation. `coreutils` (ln, mkdir) lays the blobs out for it.
{ registry-tools, system ? builtins.currentSystem, shell ? "/bin/sh", coreutils ? null }:

let
  sanitize = s: builtins.replaceStrings [ "/" ":" "@" ] [ "-" "-" "-" ] s;
  opt = flag: value: if value == null || value == "" then [ ] else [ flag value ];
  tool = "${registry-tools}/bin/registry-tools";
  impureEnvVars = [ "REGISTRY_AUTH_FILE" "DOCKER_CONFIG" "NIX_SSL_CERT_FILE" "SSL_CERT_FILE"
                    "SSL_CERT_DIR" "REGISTRY_TOOLS_CERTS_D" "http_proxy" "https_proxy" "all_proxy" "no_proxy"
                    "HTTP_PROXY" "HTTPS_PROXY" "ALL_PROXY" "NO_PROXY" ];
  # the registry-tools command of a fixed-output derivation: a cache of its own, the CA file Nix names
  fetchScript = ''
    set -eu
    export HOME="$TMPDIR" REGISTRY_TOOLS_CACHE="$TMPDIR/cache"
    ca=""
    if [ -n "''${NIX_SSL_CERT_FILE:-}" ] && [ -r "$NIX_SSL_CERT_FILE" ]; then ca="--ca-file=$NIX_SSL_CERT_FILE"; fi
    exec "$tool" "$@" $ca -o "$out"
  '';

  pullImage =
    { imageName
    , imageDigest
    , hash ? null
    , sha256 ? null                    # nixpkgs' older name for hash
    , os ? "linux"
    , arch ? null
    , variant ? null
    , platform ? null                  # "all": the whole index (format "oci" or "oci-archive")
    , finalImageName ? imageName
    , finalImageTag ? "latest"
    , format ? "docker-archive"
    , manifestDigest ? null            # recorded by prefetch; the pull checks the index entry itself
    , tlsVerify ? true
    , name ? "docker-image-${sanitize finalImageName}-${sanitize finalImageTag}${
        if format == "oci" then "" else ".tar"}"
    , extraArgs ? [ ]
    }:
    assert (hash != null) != (sha256 != null) || throw "pullImage: give hash (or sha256), once";
    assert builtins.elem format [ "docker-archive" "oci-archive" "oci" ] || throw "pullImage: unknown format ${format}";
    let
      args = [ "pull" "${imageName}@${imageDigest}" "--format" format
               "--final-image-name" finalImageName "--final-image-tag" finalImageTag "-q" ]
        ++ (if platform == "all" then [ "--all" ]
            else if platform != null then [ "--platform" platform ]
            else opt "--os" os ++ opt "--arch" arch ++ opt "--variant" variant)
        ++ (if tlsVerify then [ ] else [ "--tls-verify=false" ])
        ++ extraArgs;
    in
    derivation {
      inherit name system tool impureEnvVars;
      builder = shell;
      args = [ "-c" fetchScript "registry-tools" ] ++ args;
      outputHashMode = if format == "oci" then "recursive" else "flat";
      outputHashAlgo = "sha256";
      outputHash = if hash != null then hash else sha256;
      preferLocalBuild = true;
    };

  # One blob (or manifest) of a layer pin: a fixed-output derivation named by its digest alone,
  # so every image listing the blob, from any repository, has the same store path for it.
  fetchBlob = { imageName, tlsVerify, manifest }: blob:
    let
      hex = builtins.substring 7 64 blob.digest;
    in
    assert builtins.match "sha256:[0-9a-f]{64}" blob.digest != null
      || throw "assembleImage: ${blob.digest} is not a sha256 digest";
    derivation {
      name = "sha256-${hex}";
      inherit system tool impureEnvVars;
      builder = shell;
      args = [ "-c" fetchScript "registry-tools" "fetch-blob" "${imageName}@${blob.digest}"
               "--size" (toString blob.size) "--unchecked" "-q" ]
        ++ (if manifest then [ "--manifest" ] else [ ])
        ++ (if tlsVerify then [ ] else [ "--tls-verify=false" ]);
      outputHashMode = "flat";
      outputHashAlgo = "sha256";
      outputHash = hex;
      preferLocalBuild = true;
    };

  # A layer pin (`registry-tools prefetch --layers`): its blobs fetched one derivation each, the
  # image assembled from them by an ordinary derivation (no network) into the bytes `pull` writes.
  assembleImage =
    { imageName
    , imageDigest
    , manifests
    , finalImageName ? imageName
    , finalImageTag ? "latest"
    , format ? "docker-archive"
    , tlsVerify ? true
    , name ? "docker-image-${sanitize finalImageName}-${sanitize finalImageTag}${
        if format == "oci" then "" else ".tar"}"
    , ...                              # os, arch, variant, manifestDigest, platform: read from the pin itself
    }@pin:
    assert builtins.elem format [ "docker-archive" "oci-archive" "oci" ]
      || throw "assembleImage: unknown format ${format}";
    let
      fetch = manifest: fetchBlob { inherit imageName tlsVerify manifest; };
      blobsOf = m: [ (fetch true m) ]
        ++ map (fetch false) ((if m ? config then [ m.config ] else [ ]) ++ (m.layers or [ ]));
      blobs = builtins.concatMap blobsOf manifests;
      pinJson = builtins.toJSON (builtins.removeAttrs pin [ "name" "tlsVerify" "reference" ]);
    in
    derivation {
      inherit name system tool pinJson;
      builder = shell;
      PATH = if coreutils == null then "/usr/bin:/bin" else "${coreutils}/bin";
      passAsFile = [ "pinJson" ];
      blobList = builtins.concatStringsSep " " (map (b: "${b}") blobs);
      args = [ "-c" ''
        set -eu
        export HOME="$TMPDIR" REGISTRY_TOOLS_CACHE="$TMPDIR/cache"
        mkdir "$TMPDIR/blobs"
        for blob in $blobList; do     # each named sha256-<hex>: linked as <hex>, as a layout's blobs are
          hex="''${blob##*-sha256-}"
          [ -e "$TMPDIR/blobs/$hex" ] || ln -s "$blob" "$TMPDIR/blobs/$hex"
        done
        exec "$tool" assemble "$pinJsonPath" --blobs "$TMPDIR/blobs" --format "$format" -q -o "$out"
      '' ];
      inherit format;
      preferLocalBuild = true;
    };

  # A lock written by `registry-tools prefetch --from FILE --json` (full pins, layer pins, or
  # both): one derivation per pin.
  imagesFromLock = lock:
    let doc = builtins.fromJSON (builtins.readFile lock);
    in assert doc.version == 1 || throw "imagesFromLock: not a registry-tools lock (version 1)";
      map (entry:
        let pin = builtins.removeAttrs entry [ "reference" ];
        in if entry ? manifests then assembleImage pin else pullImage pin) doc.images;
in
{
  inherit pullImage assembleImage imagesFromLock;
}
