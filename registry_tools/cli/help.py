"""Help that teaches: the commands in groups, and two or three real examples under each one."""
from __future__ import annotations

import argparse
import re

GROUPS = {
    "read": ("pull", "export", "prefetch", "assemble", "fetch-blob", "inspect", "digest", "tags", "referrers"),
    "compare": ("diff",),
    "write": ("build", "build-shell", "push", "copy", "sync", "lock", "index", "attach"),
    "image surgery": ("mutate", "append", "flatten", "rebase", "check-base"),
    "signing": ("generate-key", "sign", "verify"),
    "registry housekeeping": ("tag", "delete", "login", "logout"),
    "cache": ("cache",),
    "shell": ("completion",),
}

EXAMPLES = {
    "pull": ["registry-tools pull docker.io/library/alpine@sha256:… -o alpine.tar",
             "registry-tools pull ghcr.io/org/app@sha256:… --platform linux/arm64 --format oci -o app/",
             "registry-tools pull alpine@sha256:… -o alpine.tar --hash sha256-…   # refuses any other output"],
    "export": ["registry-tools export docker.io/library/alpine@sha256:… -o rootfs.tar",
               "registry-tools export oci:./layout:1.0 -o rootfs.tar --json"],
    "prefetch": ["registry-tools prefetch alpine 3.19",
                 "registry-tools prefetch ghcr.io/org/app:1.2 --platform linux/arm64 --layers --json > app.pin.json",
                 "registry-tools prefetch --from images.txt --json > images.lock.json"],
    "assemble": ["registry-tools assemble app.pin.json -o app.tar   # the bytes pull writes",
                 "registry-tools assemble app.pin.json --format oci-archive -o app.tar",
                 "registry-tools assemble app.pin.json --blobs layout/blobs/sha256 -o app.tar   # nothing fetched"],
    "fetch-blob": ["registry-tools fetch-blob ghcr.io/org/app@sha256:… -o layer.tar.gz",
                   "registry-tools fetch-blob ghcr.io/org/app@sha256:… --manifest -o manifest.json"],
    "build": ["registry-tools build spec.json -o image.tar",
              "registry-tools build spec.json --oci layout/",
              "registry-tools build spec.json --push registry.example.com/team/app:1.0"],
    "build-shell": ["registry-tools build-shell $(nix-instantiate '<nixpkgs>' -A hello) --oci layout/",
                    "registry-tools build-shell app.drv --run buildDerivation --push reg.example/team/app-env:1",
                    "registry-tools build-shell app.drv --graph inputs-graph --stream | podman load"],
    "push": ["registry-tools push layout/:v1 registry.example.com/team/app:1.0",
             "registry-tools push image.tar localhost:5000/app:latest"],
    "copy": ["registry-tools copy docker.io/library/alpine:3.19 mirror.example/hub/library/alpine:3.19",
             "registry-tools copy --platform linux/amd64,linux/arm64 ghcr.io/org/app:1.2 reg.example/app:1.2",
             "registry-tools copy oci:./layout:v1 docker://localhost:5000/app:v1 --tag stable"],
    "sync": ["registry-tools prefetch --from images.txt --json > images.lock.json",
             "registry-tools sync images.lock.json --to mirror.example/hub -o mirror.lock.json",
             "registry-tools sync images.lock.json mirror.example/hub --shard 0/4 -o mirror-0.lock.json"],
    "lock": ["registry-tools lock merge mirror-0.lock.json mirror-1.lock.json mirror-2.lock.json "
             "mirror-3.lock.json -o mirror.lock.json",
             "registry-tools lock merge mirror-*.lock.json > mirror.lock.json"],
    "index": ["registry-tools index create reg.example/app:1.2 reg.example/app@sha256:…amd64 "
              "reg.example/app@sha256:…arm64",
              "registry-tools index add reg.example/app:1.2 ghcr.io/org/app-riscv@sha256:…",
              "registry-tools index remove oci:./layout:1.2 --platform linux/arm/v7"],
    "attach": ["registry-tools attach reg.example/app:1.2 --artifact-type application/spdx+json sbom.spdx.json",
               "registry-tools attach reg.example/app@sha256:… --artifact-type application/vnd.example.report "
               "report.txt:text/plain"],
    "referrers": ["registry-tools referrers reg.example/app:1.2",
                  "registry-tools referrers reg.example/app@sha256:… --artifact-type application/spdx+json --json"],
    "mutate": ["registry-tools mutate reg.example/app:1.2 reg.example/app:1.2-debug --env DEBUG=1 --cmd 'app -v'",
               "registry-tools mutate --all reg.example/app:1.2 reg.example/app:1.2 --label org.example.team=web",
               "registry-tools mutate oci:./layout:v1 docker-archive:app.tar:app:v1 --format docker"],
    "append": ["registry-tools append reg.example/app:1.2 reg.example/app:1.2-conf --layer ./etc-overlay/",
               "registry-tools append --all reg.example/base:1 reg.example/base:1-certs --layer certs.tar.gz"],
    "flatten": ["registry-tools flatten reg.example/app:1.2 reg.example/app:1.2-flat",
                "registry-tools flatten oci:./layout:v1 oci:./flat:v1 --json"],
    "rebase": ["registry-tools rebase reg.example/app:1.2 reg.example/app:1.2   # onto what its base's tag names now",
               "registry-tools rebase reg.example/app:1.2 reg.example/app:1.3 --old-base reg.example/base@sha256:… "
               "--new-base reg.example/base:2"],
    "check-base": ["registry-tools check-base reg.example/app:1.2 || echo 'the base moved: rebase'",
                   "registry-tools check-base oci:./layout:v1 --json"],
    "generate-key": ["registry-tools generate-key release   # release.key, release.pub; asks the passphrase twice",
                     "registry-tools generate-key ci --json   # the passphrase from COSIGN_PASSWORD",
                     "registry-tools generate-key legacy --pkcs8   # PKCS#8 PEM: sign reads it, cosign does not"],
    "sign": ["registry-tools sign reg.example/app@sha256:… --key release.key",
             "registry-tools sign reg.example/app:1.2 --key cosign.key --json   # a key cosign made"],
    "verify": ["registry-tools verify reg.example/app:1.2 --key release.pub",
               "registry-tools pull reg.example/app@sha256:… --verify-key release.pub -o app.tar"],
    "inspect": ["registry-tools inspect ghcr.io/org/app:1.2",
                "registry-tools inspect --raw docker.io/library/alpine:3.19 --platform linux/arm64"],
    "diff": ["registry-tools diff reg.example/app:1.2 reg.example/app:1.3   # exit 0: the same, 1: they differ",
             "registry-tools diff oci:./old:v1 oci:./new:v1 --files=false   # keys and layers; no layer read",
             "registry-tools diff reg.example/app@sha256:… docker-archive:app.tar --platform linux/arm64 --json"],
    "digest": ["registry-tools digest ghcr.io/org/app:1.2",
               "registry-tools digest ghcr.io/org/app:1.2 --platform linux/arm64"],
    "tags": ["registry-tools tags docker.io/library/alpine", "registry-tools tags localhost:5000/app --json"],
    "tag": ["registry-tools tag localhost:5000/app@sha256:… stable",
            "registry-tools tag localhost:5000/app:1.2 latest"],
    "delete": ["registry-tools delete localhost:5000/app@sha256:…",
               "registry-tools delete localhost:5000/app@sha256:… --json"],
    "cache": ["registry-tools cache info", "registry-tools cache prune --max-size 20G",
              "registry-tools cache prune --older-than 30"],
    "login": ["printf '%s' \"$TOKEN\" | registry-tools login ghcr.io -u me --password-stdin",
              "registry-tools login localhost:5000 -u ci --password-stdin --authfile ./auth.json < pw"],
    "logout": ["registry-tools logout ghcr.io", "registry-tools logout localhost:5000 --authfile ./auth.json"],
    "completion": ["registry-tools completion bash > /etc/bash_completion.d/registry-tools",
                   "registry-tools completion zsh > ~/.zfunc/_registry-tools",
                   "registry-tools completion fish > ~/.config/fish/completions/registry-tools.fish"],
}


# the actions of a command that has them (`index create`): examples of each under its own help
ACTION_EXAMPLES = {
    "index create": ["registry-tools index create reg.example/app:1.2 reg.example/app@sha256:…amd64 "
                     "reg.example/app@sha256:…arm64",
                     "registry-tools index create oci:./layout:1.2 ghcr.io/org/app-amd64:1.2 ghcr.io/org/app-arm64:1.2"
                     "   # tags: taken at their digests now",
                     "registry-tools index create reg.example/app:1.2 reg.example/app@sha256:… --annotation "
                     "org.opencontainers.image.version=1.2"],
    "index add": ["registry-tools index add reg.example/app:1.2 ghcr.io/org/app-riscv@sha256:…",
                  "registry-tools index add oci:./layout:1.2 reg.example/app@sha256:…   # replaces that platform's "
                  "entry"],
    "index remove": ["registry-tools index remove reg.example/app:1.2 --platform linux/arm/v7",
                     "registry-tools index remove oci:./layout:1.2 --platform linux/arm/v6,linux/arm/v7"],
    "lock merge": EXAMPLES["lock"],
}


def examples(name: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in {**EXAMPLES, **ACTION_EXAMPLES}[name])


def teach(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Examples under every command's help; the commands, grouped, under the program's."""
    summaries: dict[str, str] = {}
    for action in sub._choices_actions:
        summaries[action.dest] = action.help or ""
    for name, p in sub.choices.items():
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.epilog = examples(name)
        for actions in (a for a in p._actions if isinstance(a, argparse._SubParsersAction)):
            for verb, q in actions.choices.items():
                assert f"{name} {verb}" in ACTION_EXAMPLES, f"no examples for {name} {verb}"
                q.formatter_class = argparse.RawDescriptionHelpFormatter
                q.epilog = examples(f"{name} {verb}")
    width = max(len(n) for n in sub.choices) + 2
    lines = []
    for group, names in GROUPS.items():
        lines.append(f"{group}:")
        lines += [f"  {n:<{width}}{summaries.get(n, '')}" for n in names if n in sub.choices]
    missing = sorted(set(sub.choices) - {n for names in GROUPS.values() for n in names})
    assert not missing, f"commands in no help group: {missing}"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "commands:\n" + "\n".join("  " + line for line in lines) + \
        "\n\n`registry-tools COMMAND --help` shows a command's options and examples."


def suggestion(message: str) -> str:
    """argparse's `invalid choice` as one line a user reads: an unknown command (or action) named
    with the nearest one, an option's or an argument's value with the values it takes."""
    m = re.search(r"argument ([^:]+): invalid choice: (.*?) \(choose from (.*)\)", message)
    if not m:  # `argument -o/--output: expected one argument`: the option's name is enough
        return re.sub(r"^argument ([^:]+): ", lambda a: a.group(1).split("/")[-1] + ": ", message)
    name, value = m.group(1).split("/")[-1], m.group(2).strip("'\"")
    choices = [c.strip().strip("'\"") for c in m.group(3).split(",")]
    import difflib

    if name.upper() in ("COMMAND", "ACTION"):
        noun = name.lower()
        near = difflib.get_close_matches(value, choices, n=1, cutoff=0.5 if noun == "command" else 0.7)
        hint = f"; did you mean {near[0]!r}?" if near else f"; the {noun}s are: {', '.join(choices)}"
        return f"unknown {noun} {value!r}{hint}"
    near = difflib.get_close_matches(value, choices, n=1, cutoff=0.7)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"{name} {value!r} is not one of: {', '.join(choices)}{hint}"


def unknown_option(word: str, known: list[str], prog: str) -> str:
    """`--versio`: one line naming the nearest option this command has."""
    import difflib

    longs = {k[2:]: k for k in known if k.startswith("--")}
    near = difflib.get_close_matches(word.lstrip("-"), list(longs), n=1, cutoff=0.6)
    return f"unknown option {word}" + (f"; did you mean {longs[near[0]]}?" if near else
                                           f"; `{prog} --help` lists them")
