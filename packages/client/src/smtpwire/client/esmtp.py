"""aiosmtplib's ``esmtp`` helper: an EHLO reply's text to extensions and AUTH
mechanisms, so ``from aiosmtplib.esmtp import parse_esmtp_extensions`` becomes
``from smtpwire.client.esmtp import ...``.

Two readings of an EHLO reply live here.  :func:`parse_esmtp_extensions`, the
public helper, returns exactly what aiosmtplib's returns, for any text (repeated
keywords, malformed ones, odd spacing included).  The client itself does not use
it: ``SMTP.ehlo()`` decides what the server supports with smtpwire.common's
stricter :func:`~smtpwire.common.extensions.parse_ehlo_reply` (malformed keywords
dropped, parameters normalised, the first of a repeated keyword kept, the SIZE
limit checked), which :func:`extension_maps` gives aiosmtplib's shape:
lower-case keywords and mechanisms.
"""

from __future__ import annotations

from smtpwire.common.extensions import Extensions

__all__ = ["extension_maps", "parse_esmtp_extensions"]


def extension_maps(extensions: Extensions) -> tuple[dict[str, str], list[str]]:
    """``({keyword: parameters}, [mechanism, ...])``, all lower-case, as aiosmtplib
    keeps them in ``esmtp_extensions`` and ``server_auth_methods``."""
    return (
        {keyword.lower(): parameters for keyword, parameters in extensions.items()},
        [mechanism.lower() for mechanism in extensions.auth_mechanisms],
    )


def parse_esmtp_extensions(message: str) -> tuple[dict[str, str], list[str]]:
    """Parse the text of a 250 EHLO reply (its lines joined with ``\\n``, as in
    ``SMTPResponse.message``) as aiosmtplib 5.1.3 does, quirks included: the first
    line, the server's name, is skipped; each other line, stripped of whitespace,
    is ``keyword`` then everything after its first space (``SIZE  1000`` gives
    ``" 1000"``), with the keyword lower-cased and kept whatever its characters;
    a repeated keyword keeps its last value; ``AUTH PLAIN`` and the old
    ``AUTH=PLAIN`` both set ``"auth"`` and add their mechanisms, lower-cased, in
    the order of the lines."""
    extensions: dict[str, str] = {}
    mechanisms: list[str] = []
    for raw in message.split("\n")[1:]:
        line = raw.strip()
        if not line:
            continue
        if line[:5].lower() == "auth=":
            keyword, parameters = "auth", line[5:]
        else:
            name, _, parameters = line.partition(" ")
            keyword = name.lower()
        extensions[keyword] = parameters
        if keyword == "auth":
            mechanisms += [mechanism.lower() for mechanism in parameters.split()]
    return extensions, mechanisms
