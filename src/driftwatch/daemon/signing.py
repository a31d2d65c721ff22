"""Standard Webhooks v1 signatures (https://www.standardwebhooks.com): sign outgoing, verify incoming.

The signed content is ``f"{webhook-id}.{webhook-timestamp}.".encode() + body``;
the signature is ``v1,<base64 HMAC-SHA256>``. During a secret rotation a
sender signs with every current secret, space-separated, and a verifier
accepts any of them. :func:`verify` works on the raw body bytes, compares in
constant time, checks the timestamp window both ways, and raises nothing but
:class:`SignatureError` whatever the headers hold (guarantees 18 and 19 in docs/guarantees.md).

>>> secret = load_secret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
>>> headers = signature_headers([secret], "msg_1", b"{}", now=1700000000.0)
>>> headers["webhook-signature"].startswith("v1,")
True
>>> verify([secret], headers, b"{}", now=1700000010.0)
'msg_1'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence

from driftwatch.errors import ConfigError, DriftwatchError

__all__ = [
    "SignatureError",
    "load_secret",
    "load_secrets",
    "sign",
    "signature_headers",
    "verify",
]

_PREFIX = b"whsec_"
_MIN_SECRET = 24
_MAX_SECRET = 64
# Bounds on what a verifier reads before doing any work: a real id is short, a
# rotation carries a few signatures; anything longer is an attack or a bug.
_MAX_ID = 256
_MAX_SIGNATURE_HEADER = 4096
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(DriftwatchError, ValueError):
    """A webhook signature is missing, malformed, wrong, or its timestamp is outside the window."""


def load_secret(raw: bytes) -> bytes:
    """The HMAC key of a secret given as ``whsec_<base64>`` or as raw bytes (at least 24 after stripping).

    >>> len(load_secret(b"  0123456789abcdef01234567  "))
    24
    """
    data = raw.strip()
    if data.startswith(_PREFIX):
        text = data[len(_PREFIX) :]
        try:
            key = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(["webhook secret: whsec_ must be followed by base64"]) from None
        if not _MIN_SECRET <= len(key) <= _MAX_SECRET:
            raise ConfigError(
                [f"webhook secret: a whsec_ secret must decode to {_MIN_SECRET}-{_MAX_SECRET} bytes, not {len(key)}"]
            )
        return key
    if len(data) < _MIN_SECRET:
        raise ConfigError(
            [
                f"webhook secret: give whsec_<base64> or at least {_MIN_SECRET} raw bytes "
                "(e.g. `python -c 'import os,base64;print(\"whsec_\"+base64.b64encode(os.urandom(32)).decode())'`)"
            ]
        )
    return data


def load_secrets(raw: bytes) -> list[bytes]:
    """Several ``whsec_`` secrets separated by whitespace (a rotation), else one secret as :func:`load_secret`.

    >>> len(load_secrets(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
    2
    """
    parts = raw.split()
    if len(parts) > 1 and all(p.startswith(_PREFIX) for p in parts):
        return [load_secret(p) for p in parts]
    return [load_secret(raw)]


def _mac(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of ``body`` sent as message ``msg_id`` at ``timestamp`` (epoch seconds)."""
    return "v1," + base64.b64encode(_mac(secret, msg_id, timestamp, body)).decode("ascii")


def signature_headers(secrets: Sequence[bytes], msg_id: str, body: bytes, now: float) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (one ``v1,…`` per secret, for rotation)."""
    if not secrets:
        raise ValueError("signature_headers needs at least one secret")
    ts = math.floor(now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(sign(s, msg_id, ts, body) for s in secrets),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if isinstance(k, str) and k.lower() == name:
            if not isinstance(v, str):
                raise SignatureError(f"{name} header is not text")
            return v
    raise SignatureError(f"missing {name} header")


def _verify(secrets: Sequence[bytes], headers: Mapping[str, str], body: bytes, now: float, tolerance: float) -> str:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise SignatureError("the body must be raw bytes")
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not msg_id or len(msg_id) > _MAX_ID or not msg_id.isascii() or not msg_id.isprintable():
        raise SignatureError("malformed webhook-id header")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureError("malformed webhook-timestamp header")
    if len(signatures) > _MAX_SIGNATURE_HEADER or not signatures.isascii():
        raise SignatureError("malformed webhook-signature header")
    ts = int(stamp)
    if not ts >= now - tolerance:  # written negated so a NaN clock or tolerance rejects
        raise SignatureError("webhook timestamp too old")
    if not ts <= now + tolerance:
        raise SignatureError("webhook timestamp too new")
    # Compared as canonical base64 text, as the reference implementation does: decoding first would accept a
    # signature whose last character differs only in base64's unused padding bits.
    expected = [base64.b64encode(_mac(s, msg_id, ts, bytes(body))) for s in secrets]
    matched = False
    for item in signatures.split(" "):
        version, sep, encoded = item.partition(",")
        if version != "v1" or not sep:
            continue  # other versions and empty items are skipped, as the spec asks
        given = encoded.encode("ascii")
        for e in expected:
            # every comparison runs, so timing does not tell which secret or signature matched
            matched |= hmac.compare_digest(e, given)
    if not matched:
        raise SignatureError("no matching webhook signature")
    return msg_id


def verify(
    secrets: Sequence[bytes], headers: Mapping[str, str], body: bytes, now: float, tolerance: float = 300
) -> str:
    """The message id of a correctly signed request; :class:`SignatureError` (and nothing else) otherwise."""
    try:
        return _verify(secrets, headers, body, now, tolerance)
    except SignatureError:
        raise
    except Exception:  # any malformed input is a bad signature, never a crash (guarantee 19 in docs/guarantees.md)
        raise SignatureError("malformed webhook signature headers") from None
