"""Standard Webhooks signatures (https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp`
and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`; pure."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from receiver.errors import ConfigError

PREFIX = "whsec_"


def parse_secret(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret; a clear error naming the variable otherwise."""
    if not secret.startswith(PREFIX):
        raise ConfigError("RECEIVER_HTTP_SINK_SECRET must start with 'whsec_' (a Standard Webhooks secret)")
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("RECEIVER_HTTP_SINK_SECRET is not base64 after 'whsec_'") from None
    if len(key) < 16:
        raise ConfigError("RECEIVER_HTTP_SINK_SECRET is too short: use at least 16 random bytes (24 or more)")
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }
