"""Which URL inputs of an edit are refused before anything is downloaded: each named by its field."""

from __future__ import annotations

from receiver.bfl.validation import check_image_bytes
from receiver.downloads import FetchPolicy
from receiver.errors import Problem
from receiver.hosts import INPUT_HOSTS
from receiver.web.inputs import InputField, refused_hosts
from tests.images import encode_image

IMAGE = check_image_bytes(encode_image("PNG"))


def policy(*hosts: str) -> FetchPolicy:
    return FetchPolicy(hosts, 1 << 20, 10**6, INPUT_HOSTS, "input image")


def test_only_the_urls_whose_host_is_not_allowed_are_named() -> None:
    fields: list[InputField] = [
        (("body", "images", 0), IMAGE),
        (("body", "images", 1), "https://images.example/a.png"),
        (("body", "images", 2), "https://127.0.0.2/trap.png"),
        (("body", "images", 3), "http://images.example/a.png"),
    ]
    found = refused_hosts(fields, policy("*"))
    assert [(p.loc, p.type) for p in found] == [
        (("body", "images", 2), "url_not_allowed"),
        (("body", "images", 3), "url_not_allowed"),
    ]
    assert "127.0.0.2 port 443 is not in RECEIVER_INPUT_HOSTS" in found[0].msg
    assert "plain http" in found[1].msg


def test_an_empty_allowlist_refuses_every_url_and_says_how_to_send_it() -> None:
    [problem] = refused_hosts([(("body", "image_url"), "https://images.example/a.png")], policy())
    assert problem == Problem(
        ("body", "image_url"),
        "images given by URL are turned off (RECEIVER_INPUT_HOSTS is empty): send it as base64",
        "url_not_allowed",
    )
    assert refused_hosts([(("body", "image"), IMAGE)], policy()) == []


def test_an_internal_address_is_allowed_when_named_exactly() -> None:
    assert (
        refused_hosts([(("body", "image_url"), "http://127.0.0.1:9/a.png")], policy("*", "127.0.0.1")) == []
    )
