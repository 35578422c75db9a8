"""The session engine under :class:`~smtpwire.server.smtp.SMTP`: construction,
hook discovery, the command loop and its checks (line length, TLS gate, call
limits, unknown verbs), and turning exceptions into replies.

The commands themselves are in :mod:`smtpwire.server.smtp`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

from smtpwire.common.lines import LineTooLong
from smtpwire.common.server_rules import CommandRefusal
from smtpwire.common.server_session import (
    TOO_MANY_ERRORS,
    ServerSession,
    SessionRules,
)

from ._auth import AuthMixin, CramMD5Secret
from ._connection import Connection
from ._content import MessageContent
from ._discovery import command_table, handler_hooks
from ._log_lines import command_text
from ._modern import RCPT_LIMIT_DEFAULT, BareNewlinePolicy, Extensions, with_enhanced_code
from ._observing import ObserverMixin
from ._proxy_session import ProxyHeaderMixin
from ._read_callback import answer_in_callback, runnerless_verbs
from .auth_limits import AuthFailureLimiter
from .observe import Observer
from .session import (
    MISSING,
    AuthCallbackType,
    AuthenticatorType,
    Envelope,
    PeerType,
    Session,
)

# The greeting's software name stays aiosmtpd's so a migrated test suite that
# asserts on the banner keeps passing; ``ident=`` sets another.
__ident__ = "Python SMTP 1.4.6"

DATA_SIZE_DEFAULT: Final = 2**25

log = logging.getLogger("mail.log")

ERROR_LIMIT_MODERN: Final = 20

#: Modern mode's reply to a command whose handler failed: temporary (RFC 3463
#: 4.3.0, "other or undefined mail system status"), with nothing of the error.
INTERNAL_ERROR: Final = "451 4.3.0 Error: internal server error"


class TLSSetupException(Exception):
    """The TLS handshake after STARTTLS failed."""


class SessionProtocol(Connection, AuthMixin, ObserverMixin, ProxyHeaderMixin):
    """What every SMTP-like session shares; see :class:`~smtpwire.server.smtp.SMTP`.
    AUTH is :class:`~smtpwire.server._auth.AuthMixin`; it and the other mixins come
    after Connection, whose methods their stubs (of what the engine provides) must
    not hide."""

    # With AuthMixin's and ObserverMixin's state (only one base can lay out slots;
    # the mixins have none, which gives instances a __dict__, made only if used).
    __slots__ = (
        "__ident__",
        "_auth_callback",
        "_auth_failure_limiter",
        "_auth_methods",
        "_auth_require_tls",
        "_auth_required",
        "_authenticator",
        "_bdat_content",
        "_cram_md5_secret",
        "_decode_data",
        "_greeting_delay",
        "_hooks",
        "_implicit_tls",
        "_proxy_timeout",
        "_require_starttls",
        "_runnerless_verbs",
        "_smtp_methods",
        "_state_machine",
        "_tls_context",
        "command_size_limits",
        "data_size_limit",
        "enable_SMTPUTF8",
        "envelope",
        "event_handler",
        "extensions",
        "hostname",
        "made_at",
        "session",
    )  # fmt: skip

    command_size_limit = 512
    line_length_limit = 1001
    local_part_limit = 0

    # The verbs the sans-I/O session answers in full when no hook or override is
    # involved (``ServerSession.answer``), with the server's own ``smtp_VERB``
    # method of each; SMTP fills it in.
    _RUNNERLESS_COMMANDS: ClassVar[Mapping[str, Callable[..., Any]]] = MappingProxyType({})
    # A subclass whose _command override changes nothing for those verbs while its
    # _answer_without_runner lets them through (the CLI's, which refuses commands
    # only while draining, when it sends every line to the runner) says so here.
    _COMMAND_KEEPS_FAST_PATH: ClassVar[bool] = False

    def __init__(
        self,
        handler: Any,
        *,
        data_size_limit: int | None = DATA_SIZE_DEFAULT,
        enable_SMTPUTF8: bool = False,
        decode_data: bool = False,
        hostname: str | None = None,
        ident: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        timeout: float = 300,
        auth_required: bool = False,
        auth_require_tls: bool = True,
        auth_exclude_mechanism: list[str] | None = None,
        auth_callback: AuthCallbackType | None = None,
        command_call_limit: int | Mapping[str, int] | None = None,
        authenticator: AuthenticatorType | None = None,
        proxy_protocol_timeout: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        modern: bool = False,
        pipelining: bool | None = None,
        chunking: bool | None = None,
        dsn: bool | None = None,
        enhanced_status_codes: bool | None = None,
        rcpt_limit: int = RCPT_LIMIT_DEFAULT,
        bare_lf: BareNewlinePolicy | str = BareNewlinePolicy.KEEP,
        greeting_delay: float | None = None,
        cram_md5_secret: CramMD5Secret | None = None,
        session_limit: float | None = None,
        min_data_rate: float | None = None,
        error_limit: int | None = None,
        observer: Observer | None = None,
        auth_failure_limiter: AuthFailureLimiter | None = None,
    ) -> None:
        self.__ident__ = ident or __ident__
        self.made_at = time.monotonic()  # for counting connections not yet made
        self.extensions = Extensions.resolve(
            modern=modern, pipelining=pipelining, chunking=chunking, dsn=dsn,
            enhanced_status_codes=enhanced_status_codes, rcpt_limit=rcpt_limit, bare_lf=bare_lf,
        )  # fmt: skip
        if greeting_delay is not None and greeting_delay < 0:
            raise ValueError("greeting_delay must be >= 0 (or None: no early-talker check)")
        # RFC 5321 4.3.1 / RFC 2920: a client speaks only after the greeting.  With a
        # delay set (modern: 0), one that talks first is refused, as Postfix's
        # postscreen refuses "pregreet" bots.
        self._greeting_delay = 0.0 if greeting_delay is None and modern else greeting_delay
        self.loop = loop if loop is not None else _current_loop()
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        self.hostname = hostname if hostname is not None else _local_fqdn()
        self._tls_context = tls_context
        if tls_context is not None:
            # RFC 3207 4.1: the SMTP server, not the handshake, judges a client's
            # certificate, so a context that demands one (or checks a host name) fails
            # ordinary clients.  As aiosmtpd: say so, and leave the context as it is.
            if tls_context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL}:
                log.warning(
                    "tls_context.verify_mode not in {CERT_NONE, CERT_OPTIONAL}; "
                    "this might cause client connection problems"
                )
            elif tls_context.check_hostname:
                log.warning(
                    "tls_context.check_hostname == True; "
                    "this might cause client connection problems"
                )
        # Set by a controller serving implicit TLS: the handshake runs at the start
        # of the session (see smtp.SMTP._implicit_handshake).
        self._implicit_tls: ssl.SSLContext | None = None
        self._require_starttls = bool(tls_context) and require_starttls
        self._init_auth(
            handler,
            auth_required=auth_required,
            auth_require_tls=auth_require_tls,
            auth_exclude_mechanism=auth_exclude_mechanism or (),
            auth_callback=auth_callback,
            authenticator=authenticator,
            cram_md5_secret=cram_md5_secret,
            auth_failure_limiter=auth_failure_limiter,
        )
        if proxy_protocol_timeout is not None and proxy_protocol_timeout <= 0:
            raise ValueError("proxy_protocol_timeout must be > 0")
        if proxy_protocol_timeout is not None and proxy_protocol_timeout < 3.0:
            # A proxy may be slow to send the header it holds until its client speaks.
            log.warning("proxy_protocol_timeout < 3.0")
        self._proxy_timeout = proxy_protocol_timeout
        self._hooks = handler_hooks(handler)
        if self._hooks.ehlo_version == "old":
            warnings.warn(
                "Use the 5-argument handle_EHLO() hook instead of the 4-argument "
                "handle_EHLO() hook; support for the 4-argument handle_EHLO() hook "
                "will be removed in version 2.0",
                DeprecationWarning,
                stacklevel=2,
            )
        self._smtp_methods = command_table(type(self), self.extensions.chunking)
        # Placeholders until the session's first task makes them through the
        # override points (which run in a task, as every overridable method does).
        self.session = Session(self.loop)
        self.envelope = Envelope()
        self._bdat_content: MessageContent | None = None  # of the BDAT message so far
        if error_limit is not None and error_limit < 1:
            raise ValueError("error_limit must be at least 1 (or None: no limit)")
        extensions = self.extensions
        # The protocol's state and rules (sans-I/O, in common): input framing, the
        # per-line gate and its counters, TLS, the BDAT transfer, the error budget.
        self._state_machine = ServerSession(
            self._smtp_methods,
            self,
            SessionRules(
                decode_data=decode_data,
                chunking=extensions.chunking,
                dsn=extensions.dsn,
                rcpt_limit=extensions.rcpt_limit,
                bare_newline=extensions.bare_lf,
                tls_offered=bool(tls_context),
                require_starttls=self._require_starttls,
                auth_required=auth_required,
                # Postfix's smtpd_hard_error_limit: a client that keeps getting errors
                # is probing (say, guessing addresses) or broken; modern: 20 replies
                # of 5xx, then 421 and close.
                error_limit=ERROR_LIMIT_MODERN if error_limit is None and modern else error_limit,
                command_call_limit=command_call_limit,
            ),
        )
        # aiosmtpd's name for the per-verb line limits EHLO announces (per
        # connection here: aiosmtpd's class-level dict leaks between connections).
        self.command_size_limits = self._state_machine.line_limits
        for name, value in (("session_limit", session_limit), ("min_data_rate", min_data_rate)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (or None: no limit)")
        self._runnerless_verbs = runnerless_verbs(
            self, observer, data_rate_checked=min_data_rate is not None
        )
        self._init_connection(
            self._state_machine.inbound,
            timeout=timeout,
            # modern: one hour per session.  No minimum data rate unless asked for: a
            # person typing a message by hand into the CLI's server would trip it.
            session_limit=3600.0 if session_limit is None and modern else session_limit,
            min_data_rate=min_data_rate,
            observer=observer,
        )

    @property
    def handler(self) -> Any:
        return self.event_handler

    # aiosmtpd's public settings, which a subclass may change after __init__: the
    # session machine's rules follow them.
    @property
    def tls_context(self) -> ssl.SSLContext | None:
        return self._tls_context

    @tls_context.setter
    def tls_context(self, context: ssl.SSLContext | None) -> None:
        self._tls_context = context
        self._update_rules(tls_offered=bool(context))

    @property
    def require_starttls(self) -> bool:
        return self._require_starttls

    @require_starttls.setter
    def require_starttls(self, required: bool) -> None:
        self._require_starttls = required
        self._update_rules(require_starttls=required)

    def _update_rules(self, **changes: Any) -> None:
        machine = getattr(self, "_state_machine", None)
        if machine is not None:
            machine.rules = dataclasses.replace(machine.rules, **changes)

    @property
    def max_command_size_limit(self) -> int:
        return max([self.command_size_limit, *self.command_size_limits.values()])

    @property
    def _tls_protocol(self) -> bool:
        """Whether the connection is encrypted (aiosmtpd keeps its TLS protocol
        object under this name; code that tests it for truth keeps working)."""
        return self._state_machine.encrypted

    @property
    def _current_command(self) -> str | None:
        return self._state_machine.verb

    @_current_command.setter
    def _current_command(self, verb: str | None) -> None:
        self._state_machine.verb = verb

    # -- override points (aiosmtpd's) -----------------------------------------------

    def _create_session(self) -> Session:
        return Session(self.loop)

    def _create_envelope(self) -> Envelope:
        return Envelope()

    def _set_post_data_state(self) -> None:
        self.envelope = self._create_envelope()
        content = self._bdat_content
        if content is not None:
            content.abort("transaction ended before BDAT LAST")
        self._bdat_content = None
        self._state_machine.end_transaction()

    def _set_rset_state(self) -> None:
        self._set_post_data_state()

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.session.peer = transport.get_extra_info("peername")
        if transport.get_extra_info("sslcontext") is not None:
            # Implicit TLS (SMTPS): the session is encrypted from the first byte.
            self.session.ssl = ssl_facts(transport)
            self._state_machine.tls_established()
        log.info("Peer: %r", self.session.peer)
        if self._implicit_tls is not None:
            # Nothing may be read before start_tls takes the transport over: the
            # first bytes are the client's TLS handshake.
            transport.pause_reading()  # type: ignore[attr-defined]
            self._before_tls = []  # uvloop and Python 3.10 may read all the same
        self._start_connection(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        log.info("%r connection lost", self.session.peer)
        if self._bdat_content is not None:
            self._bdat_content.abort("connection lost")  # between two BDAT chunks
        super().connection_lost(exc)

    def _describe_peer(self) -> PeerType:
        return self.session.peer

    def _queue_reply(self, status: str | bytes) -> bool:
        write_now = super()._queue_reply(status)
        if not self._closing and self._state_machine.count_reply(status):
            log.warning("%r error limit reached", self.session.peer)
            self._say_and_close(TOO_MANY_ERRORS)
        return write_now

    def _encode_reply(self, status: str) -> bytes:
        if self.extensions.enhanced_status_codes:
            command = self._current_command
            if command and command not in self._smtp_methods:
                # An unknown verb, even one that greets elsewhere (LHLO to an SMTP
                # server): RFC 2034 exempts only the replies to this server's greeting.
                command = ""
            status = with_enhanced_code(status, command)
        return status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")

    async def _on_idle_timeout(self) -> None:
        if self._abort_if_not_reading():
            return
        await self._reply(f"421 4.4.2 {self.hostname} Error: timeout exceeded")
        self._close_transport()

    # -- the session ------------------------------------------------------------------

    async def _open_session(self) -> bool:
        made = self.session  # the placeholder, with what connection_made learnt
        self._set_rset_state()
        self.session = self._create_session()
        self.session.peer, self.session.ssl = made.peer, made.ssl
        at_connect = None if self._observer is None else self._intercept("CONNECT", b"")
        # With implicit TLS, the observer's reply or delay comes where the greeting
        # would, after the handshake; a drop comes before it.
        after_tls = bool(self._implicit_tls and at_connect and at_connect.drop is None)
        if at_connect and not after_tls and not await self._intervene(at_connect, "CONNECT"):
            return False
        proxy_pending = self._proxy_timeout is not None
        if self._implicit_tls is not None:
            in_clear = await self._proxy_header_before_tls() if proxy_pending else False
            if in_clear is None:
                log.warning("%r timeout waiting for PROXY handshake", self.session.peer)
                return False
            if in_clear:
                if not await self._accept_proxy_header():
                    return False
                self._before_handshake()
                proxy_pending = False
            if not await self._implicit_handshake():
                return False
        if at_connect and after_tls and not await self._intervene(at_connect, "CONNECT"):
            return False
        if proxy_pending and not await self._accept_proxy_header():
            return False
        if self._greeting_delay is not None and await self._talked_first(self._greeting_delay):
            log.warning("%r sent data before the greeting", self.session.peer)
            await self._reply("554 5.5.1 Error: data sent before the greeting")
            return False
        await self._reply(f"220 {self.hostname} {self.__ident__}")
        return True

    async def _command(self, line: bytes | LineTooLong) -> None:
        if (
            self._observer is not None
            and isinstance(line, bytes)
            and not await self._observe_command(line)
        ):
            return
        await self._dispatch(line, self._state_machine.gate.calls_left)

    def _answer_without_runner(self) -> bool:
        return answer_in_callback(self)

    def _log_refusal(self, refusal: CommandRefusal) -> None:
        if refusal.log_reason is not None:
            log.warning("%r %s", self.session.peer, refusal.log_reason)

    async def _command_failed(self, error: Exception) -> None:
        await self._reply(await self._describe_exception(error))

    async def _talked_first(self, delay: float) -> bool:
        if delay > 0 and not self._received_any:
            # Not a synchronisation: the greeting is held back on purpose, so that a
            # bot that does not wait for it shows itself.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wait_for_input(), delay)
        return self._received_any

    async def _implicit_handshake(self) -> bool:
        raise NotImplementedError

    def _receive_data_in_callback(self) -> None:
        """After 354: receive the message with no runner (SMTP provides it)."""
        raise NotImplementedError

    async def _dispatch(
        self, line: bytes | LineTooLong, call_limit: collections.defaultdict[str, int]
    ) -> None:
        """Run one received command line, or send the gate's refusal.  ``call_limit``
        is the session's calls left per verb (the gate's own, which counts them);
        it stays in the signature for subclasses that override this method."""
        if isinstance(line, bytes) and log.isEnabledFor(logging.INFO):
            log.info("%r >> %s", self.session.peer, command_text(line))
        screened = self._state_machine.screen(line)
        if isinstance(screened, CommandRefusal):
            self._log_refusal(screened)
            await self._reply(screened.reply)
            if screened.close:
                self._close_transport()
            return
        verb, arg = screened
        await self._smtp_methods[verb](self, arg)

    async def handle_exception(self, error: Exception) -> str:
        """The reply to a command that raised ``error``: the handler's
        ``handle_exception`` decides when it has one.  Otherwise the error is
        logged with its traceback; in modern mode the client gets only a
        temporary ``451`` (the sender keeps the message and retries, and nothing
        of the server's insides, a path or a password in an exception's text,
        goes on the wire), in classic mode aiosmtpd's ``500`` with the text."""
        hook = getattr(self.event_handler, "handle_exception", None)
        if hook is not None:
            status: str = await hook(error)
            return status
        if isinstance(error, TLSSetupException):
            # Logged as one WARNING line where the handshake failed; the
            # connection is gone, so the reply below is never sent.
            return f"500 Error: ({error.__class__.__name__}) {error}"
        log.exception("%r SMTP session exception", self._describe_peer(), exc_info=error)
        if self._modern_replies:
            return INTERNAL_ERROR
        return f"500 Error: ({error.__class__.__name__}) {error}"

    @property
    def _modern_replies(self) -> bool:
        # LIMITS is offered exactly when the server was made with modern=True.
        return self.extensions.limits

    async def _describe_exception(self, error: Exception) -> str:
        status: Any
        try:
            status = await self.handle_exception(error)
        except Exception as inner:  # the hook itself failed
            log.exception("%r Exception in handle_exception()", self._describe_peer())
            try:
                status = (
                    INTERNAL_ERROR
                    if self._modern_replies
                    else f"500 Error: ({inner.__class__.__name__}) {inner}"
                )
            except Exception:  # even str() failed
                status = "500 Error: Cannot describe error"
        if not isinstance(status, str | bytes):
            # aiosmtpd dies here (its issue: a None status kills the session);
            # its documentation promises a 451, so send that.
            status = "451 Requested action aborted: error in processing"
        if isinstance(error, TLSSetupException):
            self._close_transport()
        return status if isinstance(status, str) else bytes(status).decode("utf-8", "replace")

    # -- hooks --------------------------------------------------------------------------

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        name = self._hooks.names.get(command)
        if name is None:
            return MISSING
        return await getattr(self.event_handler, name)(self, self.session, self.envelope, *args)

    def _may_refuse_transaction(self) -> bool:
        """Whether check_helo_needed or check_auth_needed could refuse a command of
        the transaction now; False spares MAIL, RCPT and DATA awaiting both."""
        return (
            self._state_machine.transaction_refusal() is not None
            or type(self).check_helo_needed is not SessionProtocol.check_helo_needed
            or type(self).check_auth_needed is not SessionProtocol.check_auth_needed
        )

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        refusal = self._state_machine.helo_refusal(helo)
        if refusal is not None:
            await self._reply(refusal)
            return True
        return False

    def _syntax_available(self, method: Callable[..., Any]) -> bool:
        if not hasattr(method, "__smtp_syntax__"):
            return False
        when = getattr(method, "__smtp_syntax_when__", None)
        return bool(getattr(self, when)) if when else True


@functools.cache
def _local_fqdn() -> str:
    # A name lookup; aiosmtpd repeats it for every connection, which stalls each
    # new session when the resolver is slow.
    return socket.getfqdn()


def _current_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return asyncio.get_event_loop_policy().get_event_loop()


def ssl_facts(transport: asyncio.BaseTransport) -> dict[str, Any]:
    """What aiosmtpd users read from ``session.ssl`` after the handshake."""
    names = ("peercert", "cipher", "compression", "ssl_object", "sslcontext", "peername")
    return {name: transport.get_extra_info(name) for name in names}
