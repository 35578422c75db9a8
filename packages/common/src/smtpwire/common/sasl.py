"""SASL encodings for SMTP AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5 and XOAUTH2.

Pure functions over base64 text; the client and the server drive the exchanges.
Decoders raise :class:`SASLDecodeError` for anything malformed and
:class:`SASLAbortedError` for the client's ``*``; credentials never appear in
exception messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Final, NamedTuple

from .errors import SASLAbortedError, SASLDecodeError

__all__ = [
    "LOGIN_PASSWORD_CHALLENGE",
    "LOGIN_USERNAME_CHALLENGE",
    "PlainCredentials",
    "b64decode",
    "b64encode",
    "cram_md5_challenge",
    "cram_md5_response",
    "cram_md5_verify",
    "decode_client_response",
    "decode_cram_md5",
    "decode_login",
    "decode_plain",
    "decode_xoauth2",
    "encode_login",
    "encode_plain",
    "encode_xoauth2",
    "xoauth2_error",
]

# The challenges aiosmtpd sends for LOGIN ("User Name\0", "Password\0" in base64).
LOGIN_USERNAME_CHALLENGE: Final = b"User Name\x00"
LOGIN_PASSWORD_CHALLENGE: Final = b"Password\x00"
_BASE64: Final = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_HEX_DIGEST: Final = re.compile(rb"[0-9a-fA-F]{32}")


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _received_bytes(value: str | bytes) -> bytes:
    """The octets of what the peer sent.  A server that decoded them with
    ``surrogateescape`` (SMTPUTF8) hands over text holding lone surrogates: they
    go back to the octets they stand for, and anything that cannot be encoded is
    not base64 either (a fuzzing find: it escaped as UnicodeEncodeError)."""
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as error:
        raise SASLDecodeError("not valid base64") from error


def b64encode(data: str | bytes) -> str:
    """Base64 text for one SASL message; RFC 4954 writes an empty one as ``=``."""
    raw = _as_bytes(data)
    return base64.b64encode(raw).decode("ascii") if raw else "="


def b64decode(text: str | bytes) -> bytes:
    """Strict base64 decoding (no stray characters); ``=`` is the empty message."""
    raw = _received_bytes(text).strip()
    if raw == b"=":
        return b""
    # Checked here rather than left to binascii, whose strictness differs between
    # Python versions (3.10 accepts "==" as empty).
    if not _BASE64.fullmatch(raw):
        raise SASLDecodeError("not valid base64")
    return base64.b64decode(raw)


def decode_client_response(line: str | bytes) -> bytes:
    """Decode the client's answer to a 334 challenge; ``*`` cancels the exchange."""
    if _received_bytes(line).strip() == b"*":
        raise SASLAbortedError("the client cancelled authentication")
    return b64decode(line)


def encode_login(value: str | bytes) -> str:
    """LOGIN's client answers: the username to the first challenge, the password to
    the second, each base64 on its own line (the draft-murchison-sasl-login exchange)."""
    raw = _as_bytes(value)
    if b"\x00" in raw:
        raise ValueError("LOGIN credentials cannot contain NUL")
    return b64encode(raw)


def decode_login(response: str | bytes) -> bytes:
    """Decode one LOGIN answer (username or password); ``*`` cancels."""
    value = decode_client_response(response)
    if b"\x00" in value:
        raise SASLDecodeError("LOGIN answer holds a NUL")
    return value


class PlainCredentials(NamedTuple):
    """What PLAIN carries (RFC 4616).  The repr hides the password."""

    authzid: bytes
    username: bytes
    password: bytes

    def __repr__(self) -> str:
        return f"PlainCredentials(authzid={self.authzid!r}, username={self.username!r}, ...)"


def encode_plain(username: str | bytes, password: str | bytes, authzid: str | bytes = b"") -> str:
    """The PLAIN initial response: base64 of ``authzid NUL username NUL password``."""
    parts = (_as_bytes(authzid), _as_bytes(username), _as_bytes(password))
    if any(b"\x00" in part for part in parts):
        raise ValueError("PLAIN credentials cannot contain NUL")
    return b64encode(b"\x00".join(parts))


def decode_plain(response: str | bytes) -> PlainCredentials:
    """Decode a PLAIN response; exactly two NULs are required."""
    parts = decode_client_response(response).split(b"\x00")
    if len(parts) != 3:
        raise SASLDecodeError("PLAIN response does not split into three fields")
    return PlainCredentials(*parts)


def cram_md5_challenge(hostname: str) -> bytes:
    """A fresh CRAM-MD5 challenge ``<random.timestamp@hostname>`` (RFC 2195), from
    the CSPRNG so it cannot be predicted and replayed."""
    return f"<{secrets.randbits(64)}.{int(time.time())}@{hostname}>".encode()


def _cram_md5_digest(password: bytes, challenge: bytes) -> str:
    return hmac.new(password, challenge, hashlib.md5).hexdigest()


def cram_md5_response(username: str | bytes, password: str | bytes, challenge: str | bytes) -> str:
    """The client's answer to a CRAM-MD5 challenge given as received (base64)."""
    decoded = b64decode(challenge)
    digest = _cram_md5_digest(_as_bytes(password), decoded)
    return b64encode(_as_bytes(username) + b" " + digest.encode("ascii"))


def decode_cram_md5(response: str | bytes) -> tuple[bytes, str]:
    """Split a CRAM-MD5 response into the username and the hex digest."""
    username, space, digest = decode_client_response(response).rpartition(b" ")
    if not space or not username or not _HEX_DIGEST.fullmatch(digest):
        raise SASLDecodeError("CRAM-MD5 response is not 'username hex-digest'")
    return username, digest.decode("ascii").lower()


def cram_md5_verify(digest: str, challenge: bytes, password: str | bytes) -> bool:
    """Check a digest from :func:`decode_cram_md5` in constant time."""
    expected = _cram_md5_digest(_as_bytes(password), challenge)
    return hmac.compare_digest(expected, digest.lower())


def encode_xoauth2(username: str, token: str) -> str:
    """The XOAUTH2 initial response: ``user=U^Aauth=Bearer T^A^A`` in base64."""
    if any(c in value for value in (username, token) for c in "\x01\r\n"):
        raise ValueError("XOAUTH2 username and token cannot contain ^A, CR or LF")
    return b64encode(f"user={username}\x01auth=Bearer {token}\x01\x01")


def decode_xoauth2(response: str | bytes) -> tuple[str, str]:
    """Split an XOAUTH2 response into username and bearer token."""
    try:
        text = decode_client_response(response).decode("utf-8")
    except UnicodeDecodeError:
        raise SASLDecodeError("XOAUTH2 response is not UTF-8") from None
    fields = text.split("\x01")
    if len(fields) != 4 or fields[2:] != ["", ""]:
        raise SASLDecodeError("XOAUTH2 response is not 'user=...^Aauth=...^A^A'")
    user, auth = fields[0], fields[1]
    if not user.startswith("user=") or not auth.startswith("auth=Bearer "):
        raise SASLDecodeError("XOAUTH2 response lacks user= or auth=Bearer")
    return user[5:], auth[12:]


def xoauth2_error(status: str, schemes: str = "Bearer", scope: str = "") -> str:
    """The base64 JSON error a server sends in a 334 after a failed XOAUTH2 attempt."""
    document = {"status": status, "schemes": schemes, "scope": scope}
    return b64encode(json.dumps(document, separators=(",", ":")))
