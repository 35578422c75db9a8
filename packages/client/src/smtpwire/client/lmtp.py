"""An LMTP client (RFC 2033): LHLO instead of EHLO, and after the message one
reply per accepted recipient, so the caller learns which mailboxes took it.

aiosmtplib has none (its issue #210).  ``sendmail``/``send_message`` return the
recipients refused at RCPT *or* after the message in the same dictionary, and
raise :class:`SMTPRecipientsRefused` when no recipient took the message.
"""

from __future__ import annotations

from smtpwire.common.commands import format_command
from smtpwire.common.extensions import parse_ehlo_reply

from ._base import Transaction, helo_name, raise_if_all_refused
from ._payload import Payload
from .errors import SMTPHeloError, SMTPNotSupported
from .response import SMTPResponse
from .smtp import SMTP
from .typing import DefaultNumType, _default

__all__ = ["LMTP"]


class LMTP(SMTP):
    async def ehlo(
        self, *, hostname: str | None = None, timeout: DefaultNumType = _default
    ) -> SMTPResponse:
        """LHLO: LMTP's EHLO."""
        name = helo_name(hostname, self.local_hostname)
        replies = await self._exchange([format_command("LHLO", name)], timeout)
        response = SMTPResponse.from_reply(replies[0])
        if response.code != 250:
            raise SMTPHeloError(response.code, response.message)
        self._set_extensions(parse_ehlo_reply(replies[0]), response)
        return response

    async def helo(
        self, *, hostname: str | None = None, timeout: DefaultNumType = _default
    ) -> SMTPResponse:
        """LMTP has no HELO; this is LHLO."""
        return await self.ehlo(hostname=hostname, timeout=timeout)

    def _use_bdat(self, payload: Payload) -> bool:
        # After BDAT LAST an LMTP server answers once per recipient, which the
        # chunked path does not read: LMTP sends with DATA, and refuses BINARYMIME
        # (which needs BDAT) rather than lose per-recipient results.
        if payload.binary:
            raise SMTPNotSupported("BODY=BINARYMIME is not supported by the LMTP client")
        return False

    async def _deliver_payload(
        self, transaction: Transaction, refused: dict[str, SMTPResponse], timeout: DefaultNumType
    ) -> tuple[dict[str, SMTPResponse], str]:
        accepted = [address for address in transaction.recipients if address not in refused]
        replies = await self._exchange(
            [], timeout, replies=len(accepted), stream=transaction.payload
        )
        message = ""
        for address, reply in zip(accepted, replies, strict=True):
            response = SMTPResponse.from_reply(reply)
            if response.code == 250:
                message = response.message
            else:
                refused[address] = response
        raise_if_all_refused(refused, transaction.recipients)
        return refused, message
