"""Tests for Standard Webhooks signing in `driftwatch.daemon.signing`, against the reference `standardwebhooks` library."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from driftwatch.daemon.signing import SignatureError, load_secret, load_secrets, sign, signature_headers, verify
from driftwatch.errors import ConfigError, DriftwatchError

KEY = os.urandom(32)
WHSEC = b"whsec_" + base64.b64encode(KEY)
BODY = b'{"version":"4","status":"firing","alerts":[]}'


def test_load_secret_forms() -> None:
    """whsec_<base64> decodes to its key, raw secrets of 24+ bytes are used as they are, short ones are refused."""
    assert load_secret(WHSEC + b"\n") == KEY
    assert load_secret(b"  " + b"k" * 24 + b"  ") == b"k" * 24
    with pytest.raises(ConfigError, match="at least 24"):
        load_secret(b"short-secret")
    with pytest.raises(ConfigError, match="base64"):
        load_secret(b"whsec_***not-base64***")
    with pytest.raises(ConfigError, match="24-64 bytes"):
        load_secret(b"whsec_" + base64.b64encode(b"x" * 8))


def test_load_secrets_reads_a_rotation() -> None:
    """Two whitespace-separated whsec_ secrets are both loaded (rotation)."""
    other = os.urandom(32)
    assert load_secrets(WHSEC + b" whsec_" + base64.b64encode(other)) == [KEY, other]


def test_our_signature_verifies_with_reference_library() -> None:
    """Headers from signature_headers pass the standardwebhooks library's verify."""
    headers = signature_headers([KEY], "msg_0123", BODY, time.time())
    Webhook(KEY).verify(BODY, headers)
    Webhook(WHSEC.decode()).verify(BODY, headers)


def test_reference_signature_verifies_with_ours() -> None:
    """A signature made by the standardwebhooks library passes our verify."""
    now = time.time()
    wh = Webhook(KEY)
    stamp = dt.datetime.fromtimestamp(now, dt.UTC)
    headers = {
        "Webhook-Id": "msg_abc",
        "Webhook-Timestamp": str(int(now)),
        "Webhook-Signature": wh.sign("msg_abc", stamp, BODY.decode()),
    }
    assert verify([KEY], headers, BODY, now) == "msg_abc"
    assert sign(KEY, "msg_abc", int(now), BODY) == headers["Webhook-Signature"]


def test_tampered_body_is_rejected_by_both() -> None:
    """Changing one byte of the body fails our verify and the library's."""
    now = time.time()
    headers = signature_headers([KEY], "msg_1", BODY, now)
    bad = BODY.replace(b"firing", b"resolv")
    with pytest.raises(SignatureError):
        verify([KEY], headers, bad, now)
    with pytest.raises(WebhookVerificationError):
        Webhook(KEY).verify(bad, headers)


@pytest.mark.parametrize("skew", [-301.0, 301.0, -86400.0])
def test_timestamp_outside_window_is_rejected(skew: float) -> None:
    """A signature stamped more than 300 s before or after now is rejected, however valid the MAC."""
    now = 1_800_000_000.0
    headers = signature_headers([KEY], "msg_1", BODY, now + skew)
    with pytest.raises(SignatureError, match=r"too (old|new)"):
        verify([KEY], headers, BODY, now)
    assert verify([KEY], headers, BODY, now, tolerance=abs(skew) + 1) == "msg_1"


def test_wrong_secret_and_missing_headers_are_rejected() -> None:
    """Another secret, or a missing header, is a SignatureError."""
    now = 1_800_000_000.0
    headers = signature_headers([KEY], "msg_1", BODY, now)
    with pytest.raises(SignatureError):
        verify([os.urandom(32)], headers, BODY, now)
    for name in headers:
        partial = {k: v for k, v in headers.items() if k != name}
        with pytest.raises(SignatureError, match="missing"):
            verify([KEY], partial, BODY, now)


def test_rotation_two_secrets() -> None:
    """Signed with old and new secret, a request verifies with either; a verifier holding both accepts either sender."""
    old, new = os.urandom(32), os.urandom(32)
    now = time.time()
    headers = signature_headers([old, new], "msg_rot", BODY, now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify([old], headers, BODY, now) == "msg_rot"
    assert verify([new], headers, BODY, now) == "msg_rot"
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    only_new = signature_headers([new], "msg_rot", BODY, now)
    assert verify([old, new], only_new, BODY, now) == "msg_rot"


def test_unknown_signature_versions_are_skipped() -> None:
    """A v2 signature next to a valid v1 one does not stop verification (the spec's forward compatibility)."""
    now = 1_800_000_000.0
    headers = signature_headers([KEY], "msg_1", BODY, now)
    headers["webhook-signature"] = "v2,AAAA " + headers["webhook-signature"]
    assert verify([KEY], headers, BODY, now) == "msg_1"


_text = st.text(max_size=64) | st.sampled_from(["", "v1,", "v1,====", "v1,\x00", "1800000000", "-1", "1e9", "٣٣٣"])
# huge values built by repetition: cheap to generate, long enough to hit every length bound
_huge = st.builds(lambda part, k: part * k, st.sampled_from(["v1,QUFB", "9", "é ", "msg_"]), st.integers(1000, 50_000))
_names = st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "Webhook-Signature", "x"]) | st.text(
    max_size=20
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(_names, _text | _huge, max_size=5),
    body=st.binary(max_size=256),
    now=st.floats(allow_nan=True, allow_infinity=True),
)
def test_verify_raises_only_signature_error(headers: dict[str, str], body: bytes, now: float) -> None:
    """Whatever the headers, body and clock hold, verify returns an id or raises SignatureError, nothing else."""
    with pytest.raises(SignatureError):  # any other exception propagates and fails the test
        verify([KEY], headers, body, now)


def test_signature_error_is_a_driftwatch_value_error() -> None:
    """SignatureError belongs to the project's tree and refines ValueError."""
    assert issubclass(SignatureError, DriftwatchError)
    assert issubclass(SignatureError, ValueError)


@settings(max_examples=200, deadline=None)
@given(
    msg_id=st.text(min_size=1, max_size=40),
    body=st.binary(max_size=128),
    flip=st.integers(min_value=0, max_value=10_000),
)
def test_verify_on_mutated_valid_headers(msg_id: str, body: bytes, flip: int) -> None:
    """A signed request verifies; with any one signature character changed it raises SignatureError only."""
    now = 1_800_000_000.0
    headers = signature_headers([KEY], msg_id, body, now)
    try:
        assert verify([KEY], headers, body, now) == msg_id
    except SignatureError:
        assert not (msg_id.isascii() and msg_id.isprintable())  # only ids we refuse to read may fail
        return
    sig = headers["webhook-signature"]
    i = 3 + flip % (len(sig) - 3)
    mutated = sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1 :]
    with pytest.raises(SignatureError):
        verify([KEY], {**headers, "webhook-signature": mutated}, body, now)


def test_signature_differing_only_in_base64_padding_bits_is_rejected() -> None:
    """A signature whose last character differs only in unused base64 bits decodes to the same MAC but is refused."""
    now = 1_800_000_000.0
    headers = signature_headers([KEY], "msg_padding", b"{}", now)
    encoded = headers["webhook-signature"].split(",", 1)[1]
    stem, pad = encoded.rstrip("="), "=" * (len(encoded) - len(encoded.rstrip("=")))
    same_mac = [
        stem[:-1] + c + pad
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        if c != stem[-1] and base64.b64decode(stem[:-1] + c + pad) == base64.b64decode(encoded)
    ]
    assert same_mac, "a 32-byte MAC leaves unused bits in its last base64 character"
    for variant in same_mac:
        with pytest.raises(SignatureError):
            verify([KEY], {**headers, "webhook-signature": f"v1,{variant}"}, b"{}", now)
