import pytest

from receiver.web.conditional import none_match_fails

ETAG = '"abc123"'


@pytest.mark.parametrize("header", ['"abc123"', 'W/"abc123"', '"other", "abc123"', "*", ' "x" ,W/"abc123" '])
def test_a_header_naming_the_etag_means_the_copy_is_current(header: str) -> None:
    assert none_match_fails(header, ETAG)


@pytest.mark.parametrize("header", [None, "", '"other"', "abc123", '"abc1234"', '"abc123'])
def test_any_other_header_means_send_the_image(header: str | None) -> None:
    assert not none_match_fails(header, ETAG)
