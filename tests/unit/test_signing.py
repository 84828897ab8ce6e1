"""Standard Webhooks signatures: the spec's published test vector, and what the `standardwebhooks`
library accepts; pure."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from receiver.errors import ConfigError
from receiver.sinks.signing import parse_secret, signature, signed_headers

# The example in the Standard Webhooks specification and its reference libraries' tests.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_test_vector() -> None:
    assert signature(parse_secret(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_standardwebhooks_library_verifies_our_headers() -> None:
    body = b'{"specversion":"1.0","id":"job-1"}'
    headers = signed_headers(parse_secret(SPEC_SECRET), "job-1", int(time.time()), body)
    assert Webhook(SPEC_SECRET).verify(body, headers) == {"specversion": "1.0", "id": "job-1"}
    assert headers["webhook-id"] == "job-1"
    with pytest.raises(WebhookVerificationError):
        Webhook(SPEC_SECRET).verify(body + b" ", headers)
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_not base64!", "not base64"),
        ("whsec_c2hvcnQ=", "too short"),
    ],
)
def test_a_bad_secret_is_a_config_error(secret: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_secret(secret)
    assert secret not in str(error.value)
