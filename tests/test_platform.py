"""Platform parsing, matching and choice, against containerd's, containers/image's and regclient's vectors."""
from __future__ import annotations

import json

import pytest

from registry_tools.model import platform as pf
from registry_tools.errors import InvalidPlatform, PlatformNotFound

from .helpers import CORPUS, load

CASES = load("platforms/platform_cases.json")["containerd_platforms"]
HOST = pf.host_platform()


def subst(value):
    """Replace the corpus's host placeholders with this machine's values."""
    if isinstance(value, str):
        return value.replace("<HOST_OS>", HOST.os).replace("<HOST_ARCH>", HOST.architecture).replace(
            "<HOST_VARIANT>", HOST.variant)
    if isinstance(value, dict):
        return {k: subst(v) for k, v in value.items() if subst(v) != ""}
    return value


def plat(obj: dict) -> pf.Platform:
    return pf.Platform.from_json(subst(obj))


def spec(text: str) -> pf.Platform:
    return pf.parse(text)


@pytest.mark.parametrize("case", CASES["Parse"]["cases"], ids=lambda c: c["input"])
def test_parse(case):
    p = pf.parse(case["input"])
    assert p == plat(case["expected"])
    m = pf.Matcher(p)
    assert m.match(plat(case["expected"]))
    for other in case["also_matches"]:
        assert m.match(plat(other)), other
    formatted = pf.format_all(p) if case["format_includes_os_options"] else pf.format_platform(p)
    expected = "/".join(x for x in subst(case["formatted"]).split("/") if x)
    assert formatted == expected
    reparsed = pf.parse(formatted)
    assert pf.format_all(reparsed) == pf.format_all(p)  # stable (features are printed sorted)


@pytest.mark.parametrize("text", CASES["Parse_invalid"])
def test_parse_invalid(text):
    with pytest.raises(InvalidPlatform):
        pf.parse(text)


@pytest.mark.parametrize("case", CASES["FormatAll_encoding"], ids=lambda c: c["expected"])
def test_format_all(case):
    assert pf.format_all(plat(case["platform"])) == case["expected"]


@pytest.mark.parametrize("make,case", [(pf.only, c) for c in CASES["Only"]["cases"]]
                         + [(pf.only_strict, c) for c in CASES["OnlyStrict"]["cases"]],
                         ids=lambda v: v["platform"] if isinstance(v, dict) else v.__name__)
def test_only_and_only_strict(make, case):
    m = make(spec(case["platform"]))
    for x in case["matches"]:
        assert m.match(spec(x)), x
    for x in case["does_not_match"]:
        assert not m.match(spec(x)), x


@pytest.mark.parametrize("case", CASES["normalize_table_from_source"]["arch"], ids=lambda c: "/".join(c["in"]))
def test_normalize_arch(case):
    arch, variant = case["in"]
    assert list(pf.normalize_arch(arch, "" if variant == "*" else variant)) == case["out"]
    if variant == "*":
        assert list(pf.normalize_arch(arch, "v9")) == case["out"]


@pytest.mark.parametrize("case", CASES["normalize_table_from_source"]["os"], ids=lambda c: c["in"] or "<empty>")
def test_normalize_os(case):
    assert pf.normalize_os(case["in"]) == subst(case["out"])


@pytest.mark.parametrize("case", CASES["windows_os_version_match"]["cases"], ids=str)
def test_windows_match(case):
    assert pf.Matcher(plat(case["host"])).match(plat(case["image"])) == case["match"]


@pytest.mark.parametrize("case", CASES["windows_host_container_compat"]["cases"], ids=str)
def test_windows_compat(case):
    assert pf.windows_compatible(case["hostOS"], case["ctrOS"]) == case["shouldRun"]


@pytest.mark.parametrize("case", CASES["windows_pick_from_list"]["cases"], ids=lambda c: c["name"])
def test_windows_pick(case):
    entries = [{"platform": c} for c in case["candidates"]]
    chosen = entries[pf.choose(entries, plat(case["host"]))]["platform"]
    assert chosen == case["want"]


# --- containers/image: choosing an instance from a list --------------------------------

CI = load("manifests/containers-image/cases.json")


@pytest.mark.parametrize("case", CI["choose_instance"],
                         ids=lambda c: f'{c["list_file"].split("/")[-1]}:{c["architecture"]}/{c.get("variant", "")}:{c.get("prefer_gzip")}')
def test_choose_instance(case):
    doc = json.loads((CORPUS / "manifests/containers-image" / case["list_file"]).read_text())
    entries = doc["manifests"]
    wanted = pf.Platform(case["os"], case["architecture"], case.get("variant") or "")
    prefer_gzip = case.get("prefer_gzip")
    prefer_zstd = prefer_gzip is False
    if case.get("expect_error"):
        with pytest.raises(PlatformNotFound):
            pf.choose(entries, wanted, prefer_zstd=prefer_zstd)
        return
    assert entries[pf.choose(entries, wanted, prefer_zstd=prefer_zstd)]["digest"] == case["expected_digest"]


# --- regclient's testrepo layout (buildx indexes with attestation entries) -------------

REGCLIENT = load("oci-layouts/regclient_testrepo_pull_expectations.json")["cases"]
TESTREPO = CORPUS / "oci-layouts/regclient/testrepo"


@pytest.mark.parametrize("case", REGCLIENT, ids=lambda c: f'{c["tag"]}:{c["requested_platform"]}')
def test_regclient_layout(case):
    raw = (TESTREPO / "blobs/sha256" / case["index_digest"].split(":")[1]).read_bytes()
    doc = json.loads(raw)
    entries = doc.get("manifests", [])
    wanted = pf.parse(case["requested_platform"])
    if case["expected_manifest_digest"] is None:
        with pytest.raises(PlatformNotFound):
            pf.choose_in_index(doc, wanted)
        return
    assert entries[pf.choose_in_index(doc, wanted)]["digest"] == case["expected_manifest_digest"]


def test_attestation_never_chosen():
    entries = [
        {"digest": "a", "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
    ]
    with pytest.raises(PlatformNotFound) as e:
        pf.choose(entries, pf.Platform("linux", "amd64"))
    assert e.value.offered == []


def test_no_match_lists_offers():
    entries = [{"platform": {"os": "linux", "architecture": "amd64"}},
               {"platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}]
    with pytest.raises(PlatformNotFound) as e:
        pf.choose(entries, pf.Platform("linux", "s390x"))
    assert "linux/amd64, linux/arm/v7" in str(e.value)


@pytest.mark.parametrize("wanted,entries,expected", [
    # amd64 v3 falls back to v2, then to plain amd64 (v1)
    ("linux/amd64/v3", ["linux/amd64", "linux/amd64/v2", "linux/386"], 1),
    ("linux/amd64/v3", ["linux/amd64", "linux/386"], 0),
    # arm v7 → v6 → v5
    ("linux/arm/v7", ["linux/arm/v5", "linux/arm/v6"], 1),
    # arm64 asks for v8; an entry with no variant is the same thing
    ("linux/arm64/v8", ["linux/arm/v7", "linux/arm64"], 1),
])
def test_fallbacks(wanted, entries, expected):
    es = [{"platform": pf.parse(e).to_json()} for e in entries]
    assert pf.choose(es, pf.parse(wanted)) == expected


def test_cross_arch_only_when_asked():
    es = [{"platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
          {"platform": {"os": "linux", "architecture": "386"}}]
    with pytest.raises(PlatformNotFound):
        pf.choose(es, pf.parse("linux/arm64"))
    assert pf.choose(es, pf.parse("linux/arm64"), cross_arch=True) == 0
    with pytest.raises(PlatformNotFound):
        pf.choose(es, pf.parse("linux/amd64"))
    assert pf.choose(es, pf.parse("linux/amd64"), cross_arch=True) == 1


# --- one rule for every platform read from outside -----------------------------------------------

HOSTILE = [("architecture", "amd64/../../x"), ("os", "linux\nregistry-tools: done"), ("variant", "v7\x1b[2J"),
           ("architecture", "a" * 65), ("os", "linux "), ("os.version", "10.0\x00"), ("variant", ["v7"]),
           ("os.features", ["win32k\n"]), ("os.features", "win32k"), ("variant", ".."), ("os", "-linux")]


@pytest.mark.parametrize("key,value", HOSTILE, ids=repr)
def test_a_platform_value_outside_the_grammar_is_refused_wherever_it_is_read(key, value):
    """Index entries, image configs, build specs and specifiers: one rule (model.platform.check_fields)."""
    from registry_tools.errors import ManifestError
    from registry_tools.model import manifest as mf

    entry = {"mediaType": mf.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64", key: value}}
    index = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [entry]}).encode()
    with pytest.raises(ManifestError, match=f"index entry 0 .*platform field {key}") as e:
        mf.parse(index, where="index")
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    config = json.dumps({"os": "linux", "architecture": "amd64", key: value}).encode()
    with pytest.raises(ManifestError, match=f"config of x: image config: platform field {key}"):
        mf.parse_config(config, "config of x")
    if key in ("os", "architecture", "variant") and isinstance(value, str):
        fields = {"os": "linux", "architecture": "amd64", "variant": "", key: value}
        with pytest.raises(InvalidPlatform, match=f"build spec: platform field {key}"):
            pf.declared(fields["os"], fields["architecture"], fields["variant"], True)
        with pytest.raises(InvalidPlatform):
            pf.parse(pf.format_platform(pf.Platform(fields["os"], fields["architecture"], fields["variant"] or "v1")))


@pytest.mark.parametrize("text", ["linux/amd64\n", "linux\n", "windows(10.0%0A)/amd64", "linux(+a%1B)/amd64",
                                  "linux/" + "a" * 65])
def test_a_specifier_with_a_control_character_or_too_long_is_refused(text):
    with pytest.raises(InvalidPlatform):
        pf.parse(text)


def test_real_platform_values_pass_the_rule():
    from registry_tools.model import manifest as mf

    for p in ({"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5458", "os.features": ["win32k"]},
              {"os": "linux", "architecture": "arm64", "variant": "v8.2"}, {"os": "unknown", "architecture": "unknown"},
              {"os": "linux", "architecture": "mips64p32le"}, {"os": "Linux", "architecture": "x86_64"},
              {"os": "windows", "architecture": "amd64", "os.version": "1.0(beta)+a/b"}, {"os": "", "architecture": None}):
        pf.check_fields(p, "test", mf.ManifestError)
        config = mf.parse_config(json.dumps(p).encode())
        assert pf.Platform.from_json(config) == pf.Platform.from_json(p)


def test_a_null_or_empty_os_feature_is_absent():
    """The rule lets null and "" through as absent; the platform read holds no such feature, so the
    list of what an index offers prints (it raised TypeError on a null feature)."""
    entry = {"os": "windows", "architecture": "amd64", "os.features": [None, "", "win32k"]}
    pf.check_fields(entry, "index entry", InvalidPlatform)
    got = pf.Platform.from_json(entry)
    assert got.os_features == ("win32k",) and pf.format_all(got) == "windows(+win32k)/amd64"
