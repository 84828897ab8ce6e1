"""Per-job webhook secrets, key rotation and the optional `X-BFL-Signature` body check."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from receiver.errors import ConfigError
from receiver.webhook_auth import WebhookSigner, body_signature

JOB = "job-0001"
BODY = b'{"task_id":"t-1","status":"SUCCESS","result":{"sample":"https://delivery-eu1.bfl.ai/s.jpeg"}}'


def secret(keys: list[str], job_id: str = JOB) -> str:
    return WebhookSigner(keys).secret_for(job_id)


def flip_first_char(value: str) -> str:
    """One character changed where every bit counts (the last base64 character carries padding bits)."""
    return ("A" if value[0] != "A" else "B") + value[1:]


# --- per-job secrets --------------------------------------------------------------------------------


def test_secret_is_stable_ascii_and_different_per_job() -> None:
    signer = WebhookSigner(["key-1"])
    first = signer.secret_for(JOB)
    assert first == WebhookSigner(["key-1"]).secret_for(JOB)  # derived, nothing stored per job
    assert first.isascii() and len(first) >= 32
    assert first != signer.secret_for("job-0002")
    assert "key-1" not in first


def test_secret_verifies_for_its_own_job() -> None:
    signer = WebhookSigner(["key-1"])
    assert signer.verify(JOB, signer.secret_for(JOB)) is True


def test_secret_of_another_job_is_refused() -> None:
    signer = WebhookSigner(["key-1"])
    assert signer.verify(JOB, signer.secret_for("job-0002")) is False


def test_secret_made_with_another_key_is_refused() -> None:
    assert WebhookSigner(["key-1"]).verify(JOB, secret(["someone-elses-key"])) is False


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("not base64 at all !!", id="not-base64"),
        pytest.param("s\u00e9cr\u00e8t-\u2603", id="non-ascii"),
        pytest.param(flip_first_char(secret(["key-1"])), id="one-char-changed"),
        pytest.param(secret(["key-1"]) + "x", id="extra-char"),
        pytest.param(secret(["key-1"])[:-1], id="truncated"),
    ],
)
def test_verify_refuses_bad_secrets_without_raising(presented: str | None) -> None:
    assert WebhookSigner(["key-1"]).verify(JOB, presented) is False


@pytest.mark.parametrize("keys", [[], [""], ["key-1", ""]], ids=["no-keys", "empty-key", "one-empty"])
def test_empty_keys_are_a_config_error(keys: list[str]) -> None:
    with pytest.raises(ConfigError, match="RECEIVER_SIGNING_KEYS"):
        WebhookSigner(keys)


# --- rotation ---------------------------------------------------------------------------------------


def test_rotation_first_key_signs_every_key_verifies() -> None:
    rotated = WebhookSigner(["new", "old"])
    assert rotated.secret_for(JOB) == secret(["new"])
    assert rotated.secret_for(JOB) != secret(["old"])
    assert rotated.verify(JOB, secret(["new"])) is True
    assert rotated.verify(JOB, secret(["old"])) is True  # jobs signed before the rotation still land


def test_secret_from_a_retired_key_fails() -> None:
    in_flight = secret(["old"])
    assert WebhookSigner(["new", "old"]).verify(JOB, in_flight) is True
    assert WebhookSigner(["new"]).verify(JOB, in_flight) is False


# --- X-BFL-Signature ----------------------------------------------------------------------------------


def test_body_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    expected = hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert body_signature("s3cret", BODY) == f"sha256={expected}"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(body_signature("s3cret", BODY), id="exact"),
        pytest.param(f"  {body_signature('s3cret', BODY)}\t", id="surrounding-space"),
        pytest.param(body_signature("s3cret", BODY).upper(), id="upper-case-hex"),
    ],
)
def test_verify_body_signature_accepts_a_matching_header(header: str) -> None:
    assert WebhookSigner(["key-1"]).verify_body_signature("s3cret", BODY, header) is True


@pytest.mark.parametrize(
    ("body", "header"),
    [
        pytest.param(BODY.replace(b"SUCCESS", b"FAILED"), body_signature("s3cret", BODY), id="tampered-body"),
        pytest.param(BODY, body_signature("other-secret", BODY), id="other-secret"),
        pytest.param(BODY, body_signature("s3cret", BODY).replace("sha256=", "sha1="), id="bad-prefix"),
        pytest.param(BODY, body_signature("s3cret", BODY).removeprefix("sha256="), id="no-prefix"),
        pytest.param(BODY, "", id="empty"),
        pytest.param(BODY, "sha256=", id="prefix-only"),
        pytest.param(BODY, "garbage", id="garbage"),
    ],
)
def test_verify_body_signature_refuses(body: bytes, header: str) -> None:
    assert WebhookSigner(["key-1"]).verify_body_signature("s3cret", body, header) is False


def test_verify_body_signature_refuses_non_ascii_header() -> None:
    header = "sha256=" + "\u00e9" * 64  # Starlette decodes header bytes as latin-1, so this can arrive
    assert WebhookSigner(["key-1"]).verify_body_signature("s3cret", BODY, header) is False
