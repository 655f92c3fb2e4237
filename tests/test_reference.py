"""Reference parsing against distribution/reference's own test tables."""
from __future__ import annotations

import pytest

from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.errors import InvalidDigest, InvalidReference

from .helpers import load

CASES = load("reference/distribution_reference_cases.json")

ERR_REASON = {
    "ErrNameEmpty": "empty",
    "ErrReferenceInvalidFormat": "format",
    "ErrNameContainsUppercase": "uppercase",
    "ErrNameTooLong": "too-long",
}


@pytest.mark.parametrize("case", CASES["Parse"], ids=lambda c: c["input"][:60] or "<empty>")
def test_parse(case):
    err = case["err"]
    if err is None:
        r = refs.parse(case["input"])
        assert (r.name, r.domain, r.tag, r.digest) == (case["repository"], case["domain"], case["tag"], case["digest"])
        assert str(r) == case["input"]
    elif err.startswith("digest."):
        with pytest.raises(InvalidDigest):
            refs.parse(case["input"])
    else:
        with pytest.raises(InvalidReference) as e:
            refs.parse(case["input"])
        assert e.value.reason == ERR_REASON[err]


@pytest.mark.parametrize("case", CASES["WithName_failure"], ids=lambda c: c["input"][:40] or "<empty>")
def test_name_failures(case):
    with pytest.raises(InvalidReference) as e:
        refs.with_name(case["input"])
    assert e.value.reason == ERR_REASON[case["err"]]


@pytest.mark.parametrize("case", CASES["WithName_domain_path"], ids=lambda c: c["input"])
def test_domain_path(case):
    r = refs.parse(case["input"])
    assert (r.domain, r.path) == (case["domain"], case["path"])


@pytest.mark.parametrize("case", CASES["WithTag"] + CASES["WithDigest"], ids=lambda c: c["combined"])
def test_with_tag_and_digest(case):
    r = refs.parse(case["name"])
    if case["digest"]:
        r = r.with_digest(case["digest"])
    if case["tag"]:
        r = r.with_tag(case["tag"])
    assert str(r) == case["combined"]


@pytest.mark.parametrize("case", CASES["ParseNamed_canonical_only"], ids=lambda c: c["input"])
def test_canonical_names(case):
    """ParseNamed accepts only names that are already in canonical (normalised) form."""
    def parse_named(text: str) -> refs.Reference:
        named = refs.parse_normalized(text)
        if str(named) != text:
            raise InvalidReference(f"{text} is not canonical")
        return named

    if case["err"] is None:
        r = parse_named(case["input"])
        assert (r.domain, r.path) == (case["domain"], case["path"])
    else:
        with pytest.raises(InvalidReference):
            parse_named(case["input"])


@pytest.mark.parametrize("case", CASES["Serialization"], ids=lambda c: c["description"])
def test_serialization(case):
    if case["err"]:
        with pytest.raises(InvalidReference):
            refs.parse(case["input"])
        return
    r = refs.parse(case["input"])
    assert (r.name, r.tag, r.digest) == (case["name"], case["tag"], case["digest"])


@pytest.mark.parametrize("text", CASES["ParseNormalizedNamed_valid"])
def test_normalized_valid(text):
    r = refs.parse_normalized(text)
    assert r.domain and r.path
    assert refs.parse_normalized(str(r)) == r  # the canonical form parses to itself


@pytest.mark.parametrize("text", CASES["ParseNormalizedNamed_invalid"])
def test_normalized_invalid(text):
    with pytest.raises((InvalidReference, InvalidDigest)):
        refs.parse_normalized(text)


@pytest.mark.parametrize("case", CASES["RepositoryInfo"]["cases"], ids=lambda c: c["FullName"])
def test_repository_info(case):
    for form in (case["FamiliarName"], case["FullName"], case["AmbiguousName"]):
        if not form:
            continue
        r = refs.parse_normalized(form)
        assert r.familiar_name == case["FamiliarName"]
        assert str(r) == case["FullName"]
        assert r.domain == case["Domain"]
        assert r.path == case["RemoteName"]


def test_tag_and_digest():
    (case,) = CASES["ParseNormalizedNamed_tag_and_digest"]
    r = refs.parse_normalized(case["input"])
    assert str(r) == case["string"]
    assert r.familiar_string() == case["familiar_string"]
    assert bool(r.tag) == case["tagged"] and bool(r.digest) == case["digested"]


@pytest.mark.parametrize("case", CASES["InvalidComponents"], ids=lambda c: c["op"])
def test_invalid_components(case):
    with pytest.raises(InvalidReference):
        if case["op"] == "ParseNormalizedNamed":
            refs.parse_normalized(case["input"])
        elif case["op"] == "WithTag":
            refs.parse_normalized(case["name"]).with_tag(case["tag"])
        else:
            refs.parse_normalized(case["name"]).with_digest(case["digest"])


@pytest.mark.parametrize("case", CASES["ParseAnyReference"], ids=lambda c: c["input"])
def test_parse_any(case):
    r = refs.parse_any(case["input"])
    assert isinstance(r, Digest) == case["digest_only"]
    assert str(r) == case["string"]


@pytest.mark.parametrize("case", CASES["NormalizedSplitHostname"], ids=lambda c: c["input"])
def test_split_hostname(case):
    r = refs.parse_normalized(case["input"])
    assert (r.domain, r.path) == (case["domain"], case["path"])


@pytest.mark.parametrize("case", CASES["ParseDockerRef"], ids=lambda c: c["name"])
def test_parse_docker_ref(case):
    assert str(refs.parse_docker_ref(case["input"])) == case["expected"]


@pytest.mark.parametrize("case", CASES["regexp_domain"], ids=lambda c: c["input"])
def test_regexp_domain(case):
    assert bool(refs.DOMAIN_RE.match(case["input"])) == case["match"]


@pytest.mark.parametrize("case", CASES["regexp_anchored_name"], ids=lambda c: c["input"][:60] or "<empty>")
def test_regexp_anchored_name(case):
    m = refs.ANCHORED_NAME_RE.match(case["input"])
    assert bool(m) == case["match"]
    if m and case["subs_domain_path"]:
        assert [m.group(1) or "", m.group(2)] == case["subs_domain_path"]


@pytest.mark.parametrize("case", CASES["regexp_reference"], ids=lambda c: c["input"][:60])
def test_regexp_reference(case):
    m = refs.REFERENCE_RE.match(case["input"])
    assert bool(m) == case["match"]
    if m:
        assert [m.group(1), m.group(2) or "", m.group(3) or ""] == case["subs_name_tag_digest"]


@pytest.mark.parametrize("case", CASES["regexp_identifier_64hex"], ids=lambda c: c["input"][:20])
def test_regexp_identifier(case):
    assert bool(refs.IDENTIFIER_RE.match(case["input"])) == case["match"]


def test_docker_hub_api_host():
    assert refs.parse_normalized("ubuntu").api_host == "registry-1.docker.io"
    assert refs.parse_normalized("index.docker.io/library/ubuntu").domain == "docker.io"
    assert refs.parse_normalized("localhost:5000/x").api_host == "localhost:5000"


@pytest.mark.parametrize("host,loop", [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.8.9.10", True),
    ("[::1]:5000", True), ("example.com", False), ("10.0.0.1:5000", False), ("127.0.0.1.nip.io", False),
])
def test_loopback(host, loop):
    assert refs.is_loopback_host(host) == loop


@pytest.mark.parametrize("case", CASES["FamiliarMatch"], ids=lambda c: f'{c["pattern"]}~{c["reference"]}')
def test_familiar_match(case):
    assert refs.familiar_match(case["pattern"], case["reference"]) == case["expected"]


@pytest.mark.parametrize("pattern", ["[z-a]", "[]", "[^]", "[a", "[a-]", "[-a]", "foo\\", "x/[b-a]*"])
def test_a_bad_pattern_is_bad_input_named_in_one_line(pattern):
    """Not a regex error escaping as a traceback: bad input (exit 2), one line that names the pattern."""
    with pytest.raises(InvalidReference) as caught:
        refs.familiar_match(pattern, "example.com/foo/bar:1")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"bad pattern {pattern!r}: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize("pattern,reference,expected", [
    ("foo/ba[a-r]", "foo/bar", True), ("foo/ba[^a-q]", "foo/bar", True), ("foo/ba[^r]", "foo/bar", False),
    ("foo/ba[\\r]", "foo/bar", True), ("foo/ba\\r", "foo/bar", True), ("foo/[a-f]*", "foo/bar:1", True),
])
def test_pattern_classes_and_escapes_as_go_reads_them(pattern, reference, expected):
    assert refs.familiar_match(pattern, reference) == expected


@pytest.mark.parametrize("text", ["alpine\n", "alpine:1\n", "example.com/app:v1\n", "example.com\n/app",
                                  "alpine@sha256:" + "a" * 64 + "\n"])
def test_a_trailing_line_break_is_no_part_of_a_reference(text):
    """`$` in a Python pattern matches before a final newline; every anchor of the grammar is the end of the text."""
    with pytest.raises(InvalidReference):
        refs.parse_normalized(text)


def test_a_tag_or_digest_with_a_line_break_is_refused():
    assert not refs.TAG_RE.match("v1\n") and refs.TAG_RE.match("v1")
    with pytest.raises(InvalidDigest):
        Digest.parse("sha256:" + "a" * 64 + "\n")


def test_the_cli_refuses_a_tag_ending_in_a_line_break(capsys, tmp_path):
    from .helpers import run

    code, _, err = run(capsys, "copy", "oci:" + str(tmp_path / "x"), "localhost:5000/a/b", "--tag", "v1\n")
    assert code == 2 and "not a valid tag" in err and err.count("\n") == 1
