"""Client tests written to kill mutants that survived the whole suite (issue 20,
docs/mutation.md): each names the broken product it would notice.

* A server that refuses MAIL yet answers the pipelined DATA with 354 holds a
  transaction that is not the client's (one opened earlier by someone else's
  MAIL): any end of data would deliver it.  The client must drop the connection
  at once, writing nothing more.  Without its abort it would write RSET into the
  open data phase, where no reply ever comes, and only its timeout would end it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import pytest

from smtpwire.client import SMTP, SMTPSenderRefused

SENDER = "sender@example.com"
RECIPIENT = "rcpt@example.com"
CLIENT_TIMEOUT = 60.0  # the client's own timeout: what would end a stuck exchange
PROMPT = 5.0  # far below CLIENT_TIMEOUT: how soon the client must have hung up


class DataAfterRefusedMail(asyncio.Protocol):
    """A raw server: EHLO offers PIPELINING, MAIL is refused, RCPT is refused,
    DATA gets 354; from then on it is in a data phase and answers nothing.  It keeps
    every octet received and notes when the client hangs up."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.buffer = b""
        self.in_data = False
        self.hung_up = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances: no isinstance check.
        self.transport = cast("asyncio.Transport", transport)
        transport.write(b"220 hostile.example ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.in_data:
            return
        self.buffer += data
        while not self.in_data and b"\r\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.reply(b"250-hostile.example\r\n250 PIPELINING")
            elif verb == b"MAIL":
                self.reply(b"553 5.7.1 sender rejected")
            elif verb == b"RCPT":
                self.reply(b"503 5.5.1 need MAIL first")
            elif verb == b"DATA":
                self.reply(b"354 go ahead")  # a transaction that is not this client's
                self.in_data = True
            else:
                self.reply(b"500 unexpected")

    def reply(self, text: bytes) -> None:
        assert self.transport is not None
        self.transport.write(text + b"\r\n")

    def eof_received(self) -> bool:
        self.hung_up.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.hung_up.set()


async def test_354_after_refused_mail_drops_the_connection_at_once() -> None:
    protocols: list[DataAfterRefusedMail] = []

    def factory() -> DataAfterRefusedMail:
        protocols.append(DataAfterRefusedMail())
        return protocols[-1]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=CLIENT_TIMEOUT)
    sending: asyncio.Task[object] | None = None
    try:
        await client.connect()
        await client.ehlo()
        sending = asyncio.ensure_future(client.sendmail(SENDER, [RECIPIENT], b"Subject: x\r\n\r\n"))
        (peer,) = protocols
        # The client hangs up well before its own timeout would have ended anything.
        await asyncio.wait_for(peer.hung_up.wait(), PROMPT)
        with pytest.raises(SMTPSenderRefused) as caught:
            await asyncio.wait_for(sending, PROMPT)
        assert (caught.value.code, caught.value.sender) == (553, SENDER)
        assert not client.is_connected
        lines = bytes(peer.received).split(b"\r\n")
        assert lines[0].startswith(b"EHLO ")
        # The pipelined group, and not one octet after it: no RSET, no end of data.
        assert lines[1].startswith(b"MAIL FROM:<sender@example.com>")
        assert lines[2].startswith(b"RCPT TO:<rcpt@example.com>")
        assert lines[3:] == [b"DATA", b""]
    finally:
        if sending is not None and not sending.done():
            sending.cancel()
            with contextlib.suppress(BaseException):
                await sending
        client.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), PROMPT)
