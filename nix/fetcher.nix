# registry-tools as a Nix fetcher: pullImage and imagesFromLock, with no nixpkgs needed.
#
#   fetchers = import ./nix/fetcher.nix { registry-tools = <a package with bin/registry-tools>; };
#   image = fetchers.pullImage (import ./pin.nix);      # what `registry-tools prefetch` printed
#   images = fetchers.imagesFromLock ./images.lock.json; # one derivation per pin of a lock
#
# pullImage takes nixpkgs' dockerTools.pullImage arguments and everything our pins carry
# (manifestDigest, variant, format, platform = "all"), and is a fixed-output derivation
# running `registry-tools pull`: Nix checks the hash (flat for archives, recursive for an
# OCI layout directory). The pull uses a cache of its own inside the build directory.
# Credentials, CAs and proxies come, as for nixpkgs' fetchers, from impure environment
# variables of the caller: REGISTRY_AUTH_FILE, DOCKER_CONFIG, NIX_SSL_CERT_FILE,
# SSL_CERT_FILE, REGISTRY_TOOLS_CERTS_D and the proxy variables (a file they name must be
# readable by the build: no sandbox, or a sandbox path).
{ registry-tools, system ? builtins.currentSystem, shell ? "/bin/sh" }:

let
  sanitize = s: builtins.replaceStrings [ "/" ":" "@" ] [ "-" "-" "-" ] s;
  opt = flag: value: if value == null || value == "" then [ ] else [ flag value ];

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
      inherit name system;
      builder = shell;
      args = [ "-c" ''
        set -eu
        export HOME="$TMPDIR" REGISTRY_TOOLS_CACHE="$TMPDIR/cache"
        ca=""
        if [ -n "''${NIX_SSL_CERT_FILE:-}" ] && [ -r "$NIX_SSL_CERT_FILE" ]; then ca="--ca-file=$NIX_SSL_CERT_FILE"; fi
        exec "$tool" "$@" $ca -o "$out"
      '' "pull" ] ++ args;
      tool = "${registry-tools}/bin/registry-tools";
      outputHashMode = if format == "oci" then "recursive" else "flat";
      outputHashAlgo = "sha256";
      outputHash = if hash != null then hash else sha256;
      impureEnvVars = [ "REGISTRY_AUTH_FILE" "DOCKER_CONFIG" "NIX_SSL_CERT_FILE" "SSL_CERT_FILE"
                        "REGISTRY_TOOLS_CERTS_D" "http_proxy" "https_proxy" "all_proxy" "no_proxy"
                        "HTTP_PROXY" "HTTPS_PROXY" "ALL_PROXY" "NO_PROXY" ];
      preferLocalBuild = true;
    };

  # A lock written by `registry-tools prefetch --from FILE --json`: one derivation per pin.
  imagesFromLock = lock:
    let doc = builtins.fromJSON (builtins.readFile lock);
    in assert doc.version == 1 || throw "imagesFromLock: not a registry-tools lock (version 1)";
      map (entry: pullImage (builtins.removeAttrs entry [ "reference" ])) doc.images;
in
{
  inherit pullImage imagesFromLock;
}
