"""LMTP (RFC 2033): SMTP with LHLO, for delivery into a local mailbox store.

After DATA an LMTP server answers once per accepted recipient, so a client can
tell which mailboxes took the message (RFC 2033 section 4.2).  aiosmtpd sends a
single reply; here ``handle_DATA`` may return one status for all recipients or
a sequence with one status per recipient, in the order of ``envelope.rcpt_tos``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .session import MISSING
from .smtp import SMTP, syntax

__all__ = ["LMTP"]

log = logging.getLogger("mail.log")


class LMTP(SMTP):
    @syntax("LHLO hostname")
    async def smtp_LHLO(self, arg: str | None) -> None:
        await self._greet_extended(arg, "LHLO")

    async def smtp_HELO(self, hostname: str | None) -> None:
        await self._reply('500 Error: command "HELO" not recognized')

    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._reply('500 Error: command "EHLO" not recognized')

    def _message_replies(self, status: object, recipients: int) -> list[str]:
        return _per_recipient(status, recipients)


def _per_recipient(status: object, recipients: int) -> list[str]:
    if status is MISSING:
        return ["250 OK"] * recipients
    if isinstance(status, str | bytes):
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        return [text] * recipients
    if isinstance(status, Sequence) and all(isinstance(item, str) for item in status):
        if len(status) == recipients:
            return list(status)
        log.error("handle_DATA returned %d statuses for %d recipients", len(status), recipients)
    else:
        log.error("handle_DATA returned %r; expected a status or one per recipient", status)
    return ["451 4.3.0 Error: no delivery status for this recipient"] * recipients
