import pytest

from nettrust_core.patterns import (PatternSet, ZoneSet, normalize_name, normalize_pattern,
                                    normalize_zone)

# -- normalize_name ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, canonical", [
    ("example.com", "example.com"),
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),
    ("WWW.Example.Com.", "www.example.com"),
    ("localhost", "localhost"),
    ("_dmarc.example.com", "_dmarc.example.com"),
    ("my-host.example", "my-host.example"),
    ("123.example", "123.example"),
    ("bücher.de", "xn--bcher-kva.de"),
    ("BÜCHER.de.", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ("例え。テスト", "xn--r8jz45g.xn--zckzah"),          # ideographic full stop is a dot
    ("ｅｘａｍｐｌｅ.com", "example.com"),               # full-width letters map to ASCII
    ("a" * 63 + ".com", "a" * 63 + ".com"),
])
def test_normalize_name(name, canonical):
    assert normalize_name(name) == canonical


def test_normalize_name_is_idempotent():
    for name in ("Example.COM.", "bücher.de", "_srv._tcp.example.org"):
        once = normalize_name(name)
        assert normalize_name(once) == once


def test_longest_name_allowed():
    name = ".".join(["a" * 63] * 3 + ["b" * 61])          # 253 characters
    assert len(name) == 253
    assert normalize_name(name + ".") == name


@pytest.mark.parametrize("name, reason", [
    ("", "empty"),
    (".", "empty"),
    ("a..b", "empty label"),
    (".example.com", "empty label"),
    ("example.com..", "empty label"),
    ("a" * 64 + ".com", "63"),
    (".".join(["a" * 63] * 4), "253"),
    ("exa mple.com", "' '"),
    ("exa$mple.com", "'$'"),
    ("*.example.com", "'*'"),
    ("example.com/path", "'/'"),
    ("ü b.com", "' '"),                                    # still checked after IDNA
])
def test_normalize_name_refuses(name, reason):
    with pytest.raises(ValueError) as info:
        normalize_name(name)
    assert repr(name) in str(info.value)
    assert reason in str(info.value)


def test_normalize_name_wants_a_string():
    with pytest.raises(TypeError):
        normalize_name(b"example.com")


# -- patterns ---------------------------------------------------------------------------------

def test_exact_pattern_matches_only_the_name():
    ps = PatternSet(["example.com"])
    assert ps.matches("example.com") == "example.com"
    assert ps.matches("www.example.com") is None
    assert ps.matches("com") is None
    assert ps.matches("notexample.com") is None


def test_one_label_wildcard():
    ps = PatternSet(["*.example.com"])
    assert ps.matches("www.example.com") == "*.example.com"
    assert ps.matches("_x.example.com") == "*.example.com"
    assert ps.matches("example.com") is None                     # not the apex
    assert ps.matches("a.www.example.com") is None               # not deeper
    assert ps.matches("wwwexample.com") is None


def test_any_depth_wildcard():
    ps = PatternSet(["**.example.com"])
    assert ps.matches("www.example.com") == "**.example.com"
    assert ps.matches("a.b.c.www.example.com") == "**.example.com"
    assert ps.matches("example.com") is None                     # not the apex
    assert ps.matches("badexample.com") is None
    assert ps.matches("example.com.evil") is None


def test_apex_plus_subdomains_needs_both():
    ps = PatternSet(["example.com", "**.example.com"])
    assert ps.matches("example.com") == "example.com"
    assert ps.matches("x.y.example.com") == "**.example.com"


@pytest.mark.parametrize("everything", ["*", "**"])
def test_everything(everything):
    ps = PatternSet([everything])
    for name in ("com", "example.com", "a.b.c.example.org", "localhost"):
        assert ps.matches(name) == everything


def test_wildcard_on_a_tld():
    ps = PatternSet(["*.com", "**.test"])
    assert ps.matches("example.com") == "*.com"
    assert ps.matches("www.example.com") is None
    assert ps.matches("a.b.test") == "**.test"
    assert ps.matches("test") is None


def test_most_specific_pattern_is_reported():
    ps = PatternSet(["*", "**.com", "**.example.com", "*.example.com", "www.example.com"])
    assert ps.matches("www.example.com") == "www.example.com"
    assert ps.matches("mail.example.com") == "*.example.com"
    assert ps.matches("a.mail.example.com") == "**.example.com"
    assert ps.matches("other.com") == "**.com"
    assert ps.matches("example.org") == "*"


def test_nearest_deep_suffix_wins():
    ps = PatternSet(["**.com", "**.b.example.com"])
    assert ps.matches("a.b.example.com") == "**.b.example.com"
    assert ps.matches("a.c.example.com") == "**.com"


def test_matches_reports_the_pattern_as_given():
    ps = PatternSet(["*.Bücher.DE."])
    assert ps.matches("shop.xn--bcher-kva.de") == "*.Bücher.DE."


def test_patterns_are_normalized():
    ps = PatternSet(["WWW.Example.COM.", "**.Bücher.de"])
    assert ps.matches("www.example.com")
    assert ps.matches("a.b.xn--bcher-kva.de")


def test_matchers_expect_normalized_names():
    ps = PatternSet(["example.com"])
    assert ps.matches(normalize_name("EXAMPLE.com.")) == "example.com"


def test_duplicates_count_once_and_the_first_spelling_is_kept():
    ps = PatternSet(["example.com", "EXAMPLE.com", "example.com.", "*.a.com"])
    assert len(ps) == 2
    assert list(ps) == ["example.com", "*.a.com"]
    assert ps.patterns == ("example.com", "*.a.com")


def test_len_and_bool():
    assert len(PatternSet()) == 0
    assert not PatternSet()
    assert not PatternSet([])
    assert PatternSet(["*"])
    assert len(PatternSet(["a.com", "*.a.com", "**.a.com", "*"])) == 4


@pytest.mark.parametrize("pattern", [
    "", ".", "*.", "**.", "***", "***.com", "*example.com", "ex*ample.com", "www.*.example.com",
    "*.*.example.com", "example.*", "*.**.example.com", "**.*.com", "a..com", ".example.com",
    "exa mple.com", "*.a" + "a" * 63 + ".com", "example.com*",
])
def test_bad_patterns_are_named(pattern):
    with pytest.raises(ValueError) as info:
        PatternSet(["good.example", pattern])
    assert repr(pattern) in str(info.value)


def test_leading_dot_gets_a_hint():
    with pytest.raises(ValueError, match=r"\*\*\.example\.com"):
        normalize_pattern(".example.com")


def test_normalize_pattern():
    assert normalize_pattern("*.WWW.Example.com.") == "*.www.example.com"
    assert normalize_pattern("**.bücher.de") == "**.xn--bcher-kva.de"
    assert normalize_pattern("*") == "*"
    assert normalize_pattern("**") == "**"


def test_large_pattern_set():
    ps = PatternSet(f"host{i}.example.com" for i in range(100_000))
    assert len(ps) == 100_000
    assert ps.matches("host99999.example.com") == "host99999.example.com"
    assert ps.matches("host100000.example.com") is None


# -- zones ------------------------------------------------------------------------------------

def test_zone_matches_itself_and_everything_below():
    zs = ZoneSet(["corp.example"])
    assert zs.matches("corp.example") == "corp.example"
    assert zs.matches("host.corp.example") == "corp.example"
    assert zs.matches("a.b.c.corp.example") == "corp.example"
    assert zs.matches("example") is None
    assert zs.matches("notcorp.example") is None
    assert zs.matches("corp.example.com") is None


def test_most_specific_zone():
    zs = ZoneSet(["example", "corp.example", "lab.corp.example"])
    assert zs.matches("x.lab.corp.example") == "lab.corp.example"
    assert zs.matches("x.corp.example") == "corp.example"
    assert zs.matches("x.example") == "example"


def test_root_zone_contains_everything():
    zs = ZoneSet([".", "corp.example"])
    assert zs.matches("anything.org") == "."
    assert zs.matches("com") == "."
    assert zs.matches("a.corp.example") == "corp.example"


def test_zones_are_normalized_and_reported_as_given():
    zs = ZoneSet(["Home.ARPA.", "bücher.de"])
    assert zs.matches("nas.home.arpa") == "Home.ARPA."
    assert zs.matches("www.xn--bcher-kva.de") == "bücher.de"
    assert normalize_zone("Home.ARPA.") == "home.arpa"
    assert normalize_zone(".") == "."


def test_zone_len_bool_iter():
    assert not ZoneSet()
    zs = ZoneSet(["a.example", "A.example", "b.example"])
    assert len(zs) == 2 and zs
    assert list(zs) == ["a.example", "b.example"]
    assert zs.zones == ("a.example", "b.example")


@pytest.mark.parametrize("zone", ["", "*.example.com", "**.example", "a..b", "bad zone"])
def test_bad_zones_are_named(zone):
    with pytest.raises(ValueError) as info:
        ZoneSet([zone])
    assert repr(zone) in str(info.value)
