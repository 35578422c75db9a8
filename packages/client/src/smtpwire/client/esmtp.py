"""aiosmtplib's ``esmtp`` helper: an EHLO reply's text to extensions and AUTH
mechanisms, so ``from aiosmtplib.esmtp import parse_esmtp_extensions`` becomes
``from smtpwire.client.esmtp import ...``.

The parsing is smtpwire.common's (the one the client and the server use); this
module only gives it aiosmtplib's shape: lower-case keywords and mechanisms.
"""

from __future__ import annotations

from smtpwire.common.extensions import Extensions, parse_ehlo_reply
from smtpwire.common.replies import SMTPReply

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
    ``SMTPResponse.message``): the first line, the server's name, is skipped; both
    ``AUTH PLAIN`` and the old ``AUTH=PLAIN`` feed the mechanisms."""
    lines = [line.rstrip("\r") for line in message.split("\n")]
    return extension_maps(parse_ehlo_reply(SMTPReply(250, lines)))
