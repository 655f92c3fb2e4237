"""WWW-Authenticate parsing and token-request scopes, against four upstream parsers' tests."""
from __future__ import annotations

import pytest

from registry_tools.registry.auth import ChallengeSyntaxError, parse_challenges, pick_challenge, token_scopes, validate_realm
from registry_tools.errors import AuthError

from .helpers import load

CASES = load("auth/www_authenticate_cases.json")
CHALLENGES = [c for c in CASES["challenge_cases"] if "picked_scheme" not in c]
PINGS = [c for c in CASES["challenge_cases"] if "picked_scheme" in c]


def as_dicts(chs):
    return [{"scheme": c.scheme, "params": c.params} for c in chs]


@pytest.mark.parametrize("case", CHALLENGES, ids=lambda c: c["source"].split(":")[-1].strip()[:50])
def test_challenges(case):
    strict = "regclient" in case["source"]  # regclient's tests are the strict parser's
    if case.get("expect_error"):
        with pytest.raises(ChallengeSyntaxError):
            parse_challenges(case["headers"], strict=True)
        assert parse_challenges(case["headers"])  # the lenient parser still reads something
        return
    got = as_dicts(parse_challenges(case["headers"], strict=strict))
    if case.get("expect") is not None:
        assert got == case["expect"]
    for want in case.get("expect_subset") or []:
        assert any(g["scheme"] == want["scheme"] and all(g["params"].get(k) == v for k, v in want["params"].items())
                   for g in got)


@pytest.mark.parametrize("case", PINGS, ids=lambda c: "|".join(c["headers"]))
def test_scheme_choice(case):
    chosen = pick_challenge(parse_challenges(case["headers"]))
    assert chosen.scheme == case["picked_scheme"]
    if "param_count" in case:
        assert len(chosen.params) == case["param_count"]


@pytest.mark.parametrize("case", CASES["token_request"]["cases"], ids=lambda c: c.get("note", c["challenge"]["scope"]))
def test_token_request(case):
    ch = case["challenge"]
    if case.get("expect_error"):
        with pytest.raises(AuthError):
            validate_realm(ch.get("realm", ""))
        return
    validate_realm(ch["realm"])
    assert token_scopes(ch["scope"], []) == case["expected_scopes"]


def test_our_scope_is_added_once():
    assert token_scopes("repository:a:pull", ["repository:a:pull", "repository:b:pull,push"]) == [
        "repository:a:pull", "repository:b:pull,push"]
