"""The PROXY protocol header before the greeting (``proxy_protocol_timeout``):
reading it, and, with implicit TLS, whether it comes in clear before the TLS
handshake (HAProxy passing TLS through) or inside TLS (aiosmtpd's order).

A mixin of :class:`~smtpwire.server._protocol.SessionProtocol`; it keeps no state
of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from smtpwire.common.server_input import Inbound

from .proxy_protocol import HeaderCollector, parse_header
from .session import MISSING, Session

log = logging.getLogger("mail.log")

_TLS_HANDSHAKE_RECORD: Final = b"\x16"


class ProxyHeaderMixin:
    """Stubs of what the session engine provides come first; then the methods."""

    session: Session
    transport: asyncio.Transport | None
    _proxy_timeout: float | None
    _before_tls: list[bytes] | None
    _inbound: Inbound
    _closing: bool
    _received_any: bool

    async def _wait_for_input(self) -> None:
        raise NotImplementedError

    async def _read_message(self, decoder: Any, sink: Any = None, *, wake_at: int = 0) -> bool:
        raise NotImplementedError

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        raise NotImplementedError

    async def _proxy_header_before_tls(self) -> bool | None:
        """With implicit TLS behind a proxy: whether the PROXY header comes in clear
        before the TLS handshake (HAProxy's order, TLS passed through), rather than
        inside TLS (aiosmtpd's).  The first octet tells: a TLS record starts with
        0x16, a PROXY header with "P" (v1) or CR (v2).  If it does, the bytes read so
        far become the input the header is read from.  None: nothing came in time."""
        assert self._proxy_timeout is not None  # noqa: S101 - the caller checked
        transport = self.transport
        if transport is None or self._before_tls is None:
            return False
        transport.resume_reading()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first_input_before_tls(), self._proxy_timeout)
        early = b"".join(self._before_tls)
        if not early:
            return None
        if early[:1] == _TLS_HANDSHAKE_RECORD:
            transport.pause_reading()
            return False
        self._before_tls = None
        self._inbound.feed(early)
        return True

    async def _first_input_before_tls(self) -> None:
        while self._before_tls is not None and not self._before_tls and not self._closing:
            await self._wait_for_input()

    def _before_handshake(self) -> None:
        """After a PROXY header read in clear: what followed it is the start of the
        TLS handshake; nothing more is read until the handshake takes over."""
        if self.transport is not None:
            self.transport.pause_reading()
        self._before_tls = [self._inbound.take_buffered()]
        self._received_any = False  # handshake octets are not the client talking

    async def _accept_proxy_header(self) -> bool:
        """Before the greeting: a PROXY header within the timeout, valid, and
        accepted by the handler's ``handle_PROXY``; otherwise the connection is
        closed without a reply (aiosmtpd's behaviour)."""
        assert self._proxy_timeout is not None  # noqa: S101 - the caller checked
        peer = self.session.peer
        log.debug("%r waiting PROXY handshake", peer)
        collector = HeaderCollector()
        try:
            complete = await asyncio.wait_for(self._read_message(collector), self._proxy_timeout)
        except asyncio.TimeoutError:
            log.warning("%r timeout waiting for PROXY handshake", peer)
            return False
        if not complete:
            log.info("%r connection lost during PROXY handshake", peer)
            return False
        proxy_data = parse_header(collector.header)
        self.session.proxy_data = proxy_data
        if not proxy_data:
            log.warning("%r invalid PROXY handshake", peer)
            return False
        log.info("%r valid PROXY handshake", peer)
        # Only what came after the header counts for the early-talker check.
        self._received_any = self._inbound.buffered > 0
        try:
            status = await self._call_handler_hook("PROXY", proxy_data)
        except Exception:
            log.exception("%r handle_PROXY failed", peer)
            return False
        if status is MISSING or not status:
            log.info("%r rejected by handle_PROXY", peer)
            return False
        return True
