{
  description = "registry-tools: pin, pull, build and push OCI and Docker images by talking straight to registries";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f (import ./default.nix { pkgs = nixpkgs.legacyPackages.${system}; }));
    in
    {
      packages = forAll (p: { default = p.registry-tools; registry-tools = p.registry-tools; });
      lib = forAll (p: { inherit (p) pullImage assembleImage imagesFromLock buildImage buildNixShellImage
                                     streamNixShellImage; });
      apps = forAll (p: { default = { type = "app"; program = "${p.registry-tools}/bin/registry-tools"; }; });
    };
}
