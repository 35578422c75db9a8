"""aiosmtplib's ``auth`` helpers (the SASL encodings the client sends), with its
signatures and ``bytes`` results, so ``from aiosmtplib.auth import ...`` becomes
``from smtpwire.client.auth import ...``.

The encodings are smtpwire.common's (one SASL implementation for the client and
the server); they refuse what would garble the exchange (a NUL inside a PLAIN or
LOGIN credential, ^A/CR/LF inside an XOAUTH2 username or token) with ValueError,
where aiosmtplib would encode it.  A CRAM-MD5 challenge is read as aiosmtplib
reads it (``SMTP.auth_crammd5`` answers through :func:`auth_crammd5_verify` too).
"""

from __future__ import annotations

import base64

from smtpwire.common.sasl import cram_md5_response, encode_login, encode_plain, encode_xoauth2

from .errors import SMTPAuthenticationError
from .typing import SMTPStatus

__all__ = ["auth_crammd5_verify", "auth_login_encode", "auth_plain_encode", "auth_xoauth2_encode"]


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def auth_crammd5_verify(
    username: str | bytes, password: str | bytes, challenge: str | bytes, /
) -> bytes:
    """The answer to a CRAM-MD5 challenge (as received, base64): base64 of
    ``username hex(hmac-md5(password, challenge))``.

    The challenge is decoded as aiosmtplib decodes it, with the standard library's
    lenient ``base64.b64decode`` (characters outside the alphabet are skipped); one
    it cannot decode raises ``SMTPAuthenticationError(334, "Invalid CRAM-MD5
    challenge from server: '...'")``, aiosmtplib's error and text."""
    try:
        decoded = base64.b64decode(challenge)
    except ValueError as error:  # binascii.Error, or non-ASCII text
        raise SMTPAuthenticationError(
            SMTPStatus.auth_continue, f"Invalid CRAM-MD5 challenge from server: {challenge!r}"
        ) from error
    # Re-encoded, the decoded challenge is canonical base64 for common's encoding.
    canonical = base64.b64encode(decoded)
    return cram_md5_response(username, password, canonical).encode("ascii")


def auth_plain_encode(username: str | bytes, password: str | bytes, /) -> bytes:
    """PLAIN's initial response: base64 of ``NUL username NUL password``."""
    return encode_plain(username, password).encode("ascii")


def _login_answer(value: str | bytes) -> bytes:
    # RFC 4954 writes an empty *initial* response as "="; as an answer to a 334
    # an empty value is an empty line, which is what aiosmtplib's helper returns.
    return encode_login(value).encode("ascii") if value else b""


def auth_login_encode(username: str | bytes, password: str | bytes, /) -> tuple[bytes, bytes]:
    """LOGIN's two answers: the username and the password, each in base64."""
    return _login_answer(username), _login_answer(password)


def auth_xoauth2_encode(username: str | bytes, access_token: str | bytes, /) -> bytes:
    """XOAUTH2's initial response: base64 of ``user=U^Aauth=Bearer T^A^A``."""
    return encode_xoauth2(_text(username), _text(access_token)).encode("ascii")
