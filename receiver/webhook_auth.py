"""Per-job webhook secrets derived with itsdangerous; pure, no I/O.

BFL echoes the `webhook_secret` we submit in the `X-Webhook-Secret` header. Deriving the secret from
the job id with a server-side key means nothing secret is stored per job, and a secret for one job is
useless for any other. Several keys may be configured: the first signs new secrets, all of them verify,
so a key can be rotated while jobs signed with the old one are still in flight.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from itsdangerous import Signer

from receiver.errors import ConfigError

_SALT = "kontext-receiver.webhook-secret"


class WebhookSigner:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys or not all(keys):
            raise ConfigError("RECEIVER_SIGNING_KEYS needs at least one non-empty key")
        # itsdangerous signs with the last key and verifies with all of them.
        self._signer = Signer(list(reversed(keys)), salt=_SALT, digest_method=hashlib.sha256)

    def secret_for(self, job_id: str) -> str:
        return self._signer.get_signature(job_id).decode("ascii")

    def verify(self, job_id: str, secret: str | None) -> bool:
        """Constant-time check of a presented secret against every configured key."""
        if not secret:
            return False
        try:
            presented = secret.encode("ascii")
        except UnicodeEncodeError:
            return False
        return self._signer.verify_signature(job_id.encode(), presented)

    def verify_body_signature(self, secret: str, body: bytes, header: str) -> bool:
        """Check `X-BFL-Signature: sha256=<hex HMAC-SHA256(secret, body)>`."""
        presented = header.strip().lower().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(body_signature(secret, body).encode(), presented)


def body_signature(secret: str, body: bytes) -> str:
    """The `X-BFL-Signature` value for `body`, as the simulator sends it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
