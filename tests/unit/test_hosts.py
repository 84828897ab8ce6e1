"""The download host allowlist: wildcards for BFL's delivery hosts, internal addresses only by name."""

from __future__ import annotations

import pytest

from receiver.errors import SampleRejected
from receiver.hosts import check_resolved, check_sample_url

BFL = ("*.bfl.ai",)


def refused(url: str, patterns: tuple[str, ...] = BFL) -> SampleRejected:
    with pytest.raises(SampleRejected) as info:
        check_sample_url(url, patterns)
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
    assert check_sample_url(url, BFL) == expected


def test_wildcard_pattern_is_case_insensitive() -> None:
    assert check_sample_url("https://delivery-eu1.bfl.ai/s.jpeg", ("*.BFL.AI",))[0] == "delivery-eu1.bfl.ai"


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
    assert check_sample_url("http://delivery-eu1.bfl.ai/s.jpeg", exact) == ("delivery-eu1.bfl.ai", 80)


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
    allowed_host, _ = check_sample_url(url, ("*.bfl.ai", host))
    assert allowed_host == host


def test_exact_name_keeps_the_port() -> None:
    assert check_sample_url("http://127.0.0.1:8765/results/x.png", ("127.0.0.1",)) == ("127.0.0.1", 8765)


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
