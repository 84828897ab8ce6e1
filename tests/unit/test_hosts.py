"""The download host allowlist: wildcards for BFL's delivery hosts, internal addresses only by name."""

from __future__ import annotations

import pytest

from receiver.errors import ConfigError, HostRefused, SampleRejected
from receiver.hosts import INPUT_HOSTS, check_resolved, check_url, is_internal, parse_patterns

BFL = ("*.bfl.ai",)


def refused(url: str, patterns: tuple[str, ...] = BFL) -> SampleRejected:
    with pytest.raises(SampleRejected) as info:
        check_url(url, patterns)
    assert info.value.retryable is False
    return info.value


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://delivery-eu1.bfl.ai/results/a/sample.jpeg?se=x&sig=y", ("delivery-eu1.bfl.ai", 443)),
        ("https://delivery-us1.bfl.ai/sample.png", ("delivery-us1.bfl.ai", 443)),
        ("https://a.b.bfl.ai:8443/s.jpeg", ("a.b.bfl.ai", 8443)),
        ("HTTPS://DELIVERY-EU1.BFL.AI/s.jpeg", ("delivery-eu1.bfl.ai", 443)),
    ],
)
def test_wildcard_allows_bfl_delivery_hosts(url: str, expected: tuple[str, int]) -> None:
    assert check_url(url, BFL) == expected


def test_wildcard_pattern_is_case_insensitive() -> None:
    assert check_url("https://delivery-eu1.bfl.ai/s.jpeg", ("*.BFL.AI",))[0] == "delivery-eu1.bfl.ai"


@pytest.mark.parametrize(
    "url",
    [
        "https://bfl.ai.evil.com/s.jpeg",
        "https://evilbfl.ai/s.jpeg",
        "https://bfl.ai/s.jpeg",  # `*.bfl.ai` names subdomains only
        "https://delivery-eu1.bfl.ai.evil.com/s.jpeg",
        "https://evil.com/delivery-eu1.bfl.ai/s.jpeg",
        "https://delivery-eu1.bfl.ai@evil.com/s.jpeg",
        "https://evil.com?.bfl.ai",
    ],
)
def test_look_alike_hosts_are_refused(url: str) -> None:
    assert "not in RECEIVER_SAMPLE_HOSTS" in str(refused(url))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://delivery-eu1.bfl.ai/s.jpeg",
        "file:///etc/passwd",
        "https:///s.jpeg",
        "delivery-eu1.bfl.ai/s.jpeg",
    ],
)
def test_non_http_urls_are_refused(url: str) -> None:
    assert "not an http(s) URL" in str(refused(url))


def test_plain_http_needs_an_exact_name() -> None:
    message = str(refused("http://delivery-eu1.bfl.ai/s.jpeg"))
    assert "plain http" in message
    assert "RECEIVER_SAMPLE_HOSTS" in message  # the setting to change
    exact = ("*.bfl.ai", "delivery-eu1.bfl.ai")
    assert check_url("http://delivery-eu1.bfl.ai/s.jpeg", exact) == ("delivery-eu1.bfl.ai", 80)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://127.0.0.1/s.jpeg", "127.0.0.1"),
        ("http://127.0.0.1:8765/s.jpeg", "127.0.0.1"),
        ("https://10.1.2.3/s.jpeg", "10.1.2.3"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("https://[::1]/s.jpeg", "::1"),
        ("https://192.168.0.10/s.jpeg", "192.168.0.10"),
        ("https://localhost/s.jpeg", "localhost"),
    ],
)
def test_internal_addresses_only_when_named_exactly(url: str, host: str) -> None:
    refused(url)
    refused(url, ("*.bfl.ai", "*.0.0.1", "*.1.2.3", "*.169.254", "*.0.10"))  # a wildcard is never enough
    allowed_host, _ = check_url(url, ("*.bfl.ai", host))
    assert allowed_host == host


def test_exact_name_keeps_the_port() -> None:
    assert check_url("http://127.0.0.1:8765/results/x.png", ("127.0.0.1",)) == ("127.0.0.1", 8765)


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.7"],
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["::1"],
        ["fd00::1"],
        ["::ffff:10.0.0.1"],
        ["104.18.7.7", "192.168.1.1"],  # one internal answer is enough
    ],
)
def test_wildcard_host_resolving_to_an_internal_address_is_refused(addresses: list[str]) -> None:
    with pytest.raises(SampleRejected, match="resolves to internal address"):
        check_resolved("delivery-eu1.bfl.ai", addresses, BFL)


def test_wildcard_host_resolving_to_public_addresses_is_allowed() -> None:
    check_resolved("delivery-eu1.bfl.ai", ["104.18.7.7", "2606:4700::6812:707"], BFL)


def test_exactly_named_host_may_resolve_internally() -> None:
    check_resolved("sim.internal", ["10.0.0.7"], ("*.bfl.ai", "sim.internal"))


# --- ports, invalid entries, IPv6 with IPv4 inside ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "patterns"),
    [
        ("http://127.0.0.1:8080/x.png", ("127.0.0.1:8080",)),
        ("https://delivery-eu1.bfl.ai:8443/x.png", ("*.bfl.ai:8443",)),
        ("https://delivery-eu1.bfl.ai/x.png", ("*.bfl.ai:443",)),
        ("http://[::1]:9000/x.png", ("[::1]:9000",)),
        ("http://[::1]:9000/x.png", ("::1",)),
    ],
)
def test_a_pattern_with_a_port_admits_that_port(url: str, patterns: tuple[str, ...]) -> None:
    check_url(url, patterns)


@pytest.mark.parametrize(
    ("url", "patterns"),
    [
        ("http://127.0.0.1:8081/x.png", ("127.0.0.1:8080",)),
        ("http://127.0.0.1/x.png", ("127.0.0.1:8080",)),
        ("https://delivery-eu1.bfl.ai/x.png", ("*.bfl.ai:8443",)),
        ("http://[::1]:9001/x.png", ("[::1]:9000",)),
    ],
)
def test_a_pattern_with_a_port_refuses_other_ports(url: str, patterns: tuple[str, ...]) -> None:
    assert "port" in str(refused(url, patterns))


@pytest.mark.parametrize(
    "entry",
    [
        "https://delivery.bfl.ai",
        "/var/run",
        "*",
        "*.",
        "bfl.ai/x",
        "host:0",
        "host:99999",
        "host:http",
        "[127.0.0.1]",
        "[::1",
        "a..b",
        "user@host",
        "::1:x:y",
    ],
)
def test_an_entry_that_is_not_a_host_pattern_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"RECEIVER_SAMPLE_HOSTS: .* is invalid"):
        parse_patterns(("*.bfl.ai", entry))


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::7f00:1",
        "64:ff9b:1::808:808",  # local-use NAT64
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2002:7f00:1::",
        "[::ffff:192.168.1.1]",
    ],
)
def test_ipv6_forms_of_internal_ipv4_count_as_internal(address: str) -> None:
    assert is_internal(address)


@pytest.mark.parametrize(
    "address", ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::", "2606:4700::1111"]
)
def test_ipv6_forms_of_public_ipv4_are_not_internal(address: str) -> None:
    assert not is_internal(address)


def test_a_wildcard_never_admits_an_embedded_internal_address() -> None:
    with pytest.raises(SampleRejected):
        check_resolved("delivery.bfl.ai", ["64:ff9b::a9fe:a9fe"], BFL)


@pytest.mark.parametrize(
    "url", ["http://[::1/x", "https://delivery.bfl.ai:99999/x", "https://delivery.bfl.ai:x/y"]
)
def test_malformed_urls_are_refused_not_crashed(url: str) -> None:
    refused(url)


# --- RECEIVER_INPUT_HOSTS: the same grammar, and `*` for every public host ----------------------------


def input_refused(url: str, patterns: tuple[str, ...] = ("*",)) -> str:
    with pytest.raises(HostRefused) as info:
        check_url(url, patterns, INPUT_HOSTS, "input image")
    return str(info.value)


@pytest.mark.parametrize(
    "url", ["https://images.example/car.png", "https://cdn.images.example:8443/a.jpg", "https://8.8.8.8/x"]
)
def test_a_bare_star_admits_every_public_host_for_input_images(url: str) -> None:
    check_url(url, ("*",), INPUT_HOSTS)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x.png",
        "https://127.0.0.2/x.png",
        "https://10.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "https://[::1]/x.png",
        "https://[::ffff:10.0.0.1]/x.png",
        "https://[64:ff9b::a9fe:a9fe]/x.png",
        "https://localhost/x.png",
        "https://images.localhost/x.png",
    ],
)
def test_a_bare_star_never_admits_an_internal_address(url: str) -> None:
    assert "not in RECEIVER_INPUT_HOSTS" in input_refused(url)


def test_internal_input_hosts_only_when_named_exactly() -> None:
    assert check_url("http://127.0.0.1:9000/x.png", ("*", "127.0.0.1"), INPUT_HOSTS) == ("127.0.0.1", 9000)
    check_resolved("images.internal", ["10.0.0.7"], ("*", "images.internal"), INPUT_HOSTS)
    with pytest.raises(HostRefused, match=r"input image host images\.example resolves to internal address"):
        check_resolved("images.example", ["93.184.215.14", "10.0.0.7"], ("*",), INPUT_HOSTS, "input image")


def test_a_star_with_a_port_admits_that_port_only() -> None:
    check_url("https://images.example/x.png", ("*:443",), INPUT_HOSTS)
    assert "port 8443" in input_refused("https://images.example:8443/x.png", ("*:443",))


def test_plain_http_input_urls_need_an_exact_name() -> None:
    message = input_refused("http://images.example/x.png")
    assert "plain http" in message and "RECEIVER_INPUT_HOSTS" in message
    check_url("http://images.example/x.png", ("*", "images.example"), INPUT_HOSTS)


def test_no_input_hosts_admit_nothing() -> None:
    assert "not in RECEIVER_INPUT_HOSTS" in input_refused("https://images.example/x.png", ())


@pytest.mark.parametrize("entry", ["https://images.example", "/x", "*.", "**", "*x", "host:0"])
def test_an_invalid_input_host_entry_names_the_variable(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"RECEIVER_INPUT_HOSTS: .* is invalid"):
        parse_patterns(("*", entry), INPUT_HOSTS)
