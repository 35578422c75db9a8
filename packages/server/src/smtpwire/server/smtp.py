"""The SMTP server protocol, with aiosmtpd's public API and reply texts.

One :class:`SMTP` instance serves one connection.  Handlers are duck-typed as in
aiosmtpd: every ``handle_VERB`` attribute of the handler is a hook that, when
present, owns the state change for that command and returns the reply line.
Subclasses add commands with ``async def smtp_VERB(self, arg)`` and document
them for HELP with :func:`syntax`.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import socket
import ssl
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

from smtpwire.common.data import DataDecoder, DataViolation
from smtpwire.common.lines import LineTooLong

from ._auth import (
    AuthMethod,
    auth_login,
    auth_plain,
    authenticate,
    challenge_client,
    check_mechanism_name,
    discover_auth_methods,
    run_auth,
)
from ._connection import Connection
from ._paths import PathError, parse_path, parse_verify_argument
from .session import (
    MISSING,
    AuthCallbackType,
    AuthenticatorType,
    AuthResult,
    Envelope,
    LoginPassword,
    PeerType,
    Session,
)

__all__ = [
    "BOGUS_LIMIT",
    "CALL_LIMIT_DEFAULT",
    "DATA_SIZE_DEFAULT",
    "MISSING",
    "SMTP",
    "AuthCallbackType",
    "AuthResult",
    "AuthenticatorType",
    "Envelope",
    "LoginPassword",
    "PeerType",
    "Session",
    "TLSSetupException",
    "__ident__",
    "auth_mechanism",
    "login_always_fail",
    "syntax",
]

__version__ = "0.1.0"
# The greeting's software name stays aiosmtpd's so a migrated test suite that
# asserts on the banner keeps passing; ``ident=`` sets another.
__ident__ = "Python SMTP 1.4.6"

BOGUS_LIMIT: Final = 5
CALL_LIMIT_DEFAULT: Final = 20
DATA_SIZE_DEFAULT: Final = 2**25
ALLOWED_BEFORE_STARTTLS: Final = frozenset({"NOOP", "EHLO", "LHLO", "STARTTLS", "QUIT"})

log = logging.getLogger("mail.log")

_Method = TypeVar("_Method", bound=Callable[..., Any])
_CommandMethod = Callable[[str | None], Awaitable[None]]


class TLSSetupException(Exception):
    """The TLS handshake after STARTTLS failed."""


def syntax(
    text: str, extended: str | None = None, when: str | None = None
) -> Callable[[_Method], _Method]:
    """Document an ``smtp_VERB`` method for HELP; ``extended`` is added after EHLO
    and ``when`` names an SMTP attribute that must be true for the verb to be listed."""

    def decorator(function: _Method) -> _Method:
        function.__smtp_syntax__ = text  # type: ignore[attr-defined]
        function.__smtp_syntax_extended__ = extended  # type: ignore[attr-defined]
        function.__smtp_syntax_when__ = when  # type: ignore[attr-defined]
        return function

    return decorator


def auth_mechanism(actual_name: str) -> Callable[[_Method], _Method]:
    """Give an ``auth_*`` method a mechanism name a Python identifier cannot spell."""
    name = check_mechanism_name(actual_name)

    def decorator(function: _Method) -> _Method:
        function.__auth_mechanism_name__ = name  # type: ignore[attr-defined]
        return function

    return decorator


def login_always_fail(mechanism: str, login: bytes, password: bytes) -> bool:
    return False


def _command_names(cls: type) -> tuple[str, ...]:
    names = _COMMAND_NAMES.get(cls)
    if names is None:
        names = tuple(name for name in dir(cls) if name.startswith("smtp_"))
        _COMMAND_NAMES[cls] = names
    return names


_COMMAND_NAMES: dict[type, tuple[str, ...]] = {}


def _ehlo_hook_version(hook: Callable[..., Any]) -> str:
    parameters = inspect.signature(hook).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return "new"
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) == 5:
        return "new"
    if len(positional) == 4:
        warnings.warn(
            "Use the 5-argument handle_EHLO() hook instead of the 4-argument one",
            DeprecationWarning,
            stacklevel=4,
        )
        return "old"
    raise RuntimeError("Unsupported EHLO Hook")


class SMTP(Connection):
    """One SMTP session over one connection (an :class:`asyncio.Protocol`)."""

    command_size_limit = 512
    line_length_limit = 1001
    local_part_limit = 0
    AuthLoginUsernameChallenge = "User Name\x00"
    AuthLoginPasswordChallenge = "Password\x00"

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
    ) -> None:
        self.__ident__ = ident or __ident__
        self.loop = loop if loop is not None else _current_loop()
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        self.hostname = hostname if hostname is not None else socket.getfqdn()
        self.tls_context = tls_context
        self.require_starttls = bool(tls_context) and require_starttls
        self._tls_protocol: Any = None
        self._tls_handshake_okay = True
        self._auth_required = auth_required
        self._auth_require_tls = auth_require_tls
        if auth_required and not auth_require_tls:
            warnings.warn(
                "Requiring AUTH while not requiring TLS can lead to security vulnerabilities!",
                UserWarning,
                stacklevel=2,
            )
            log.warning("auth_required == True but auth_require_tls == False")
        if proxy_protocol_timeout is not None and proxy_protocol_timeout <= 0:
            raise ValueError("proxy_protocol_timeout must be > 0")
        self._proxy_timeout = proxy_protocol_timeout
        self._authenticator = authenticator
        self._auth_callback = auth_callback or login_always_fail
        self._auth_methods: dict[str, AuthMethod] = discover_auth_methods(
            self, handler, auth_exclude_mechanism or ()
        )
        self._handle_hooks: dict[str, Callable[..., Any]] = {
            name[7:]: getattr(handler, name)
            for name in dir(handler)
            if name.startswith("handle_") and callable(getattr(handler, name, None))
        }
        ehlo_hook = self._handle_hooks.get("EHLO")
        self._ehlo_hook_ver = None if ehlo_hook is None else _ehlo_hook_version(ehlo_hook)
        self._smtp_methods: dict[str, _CommandMethod] = {
            name[5:]: getattr(self, name) for name in _command_names(type(self))
        }
        self._set_call_limits(command_call_limit)
        self.command_size_limits: collections.defaultdict[str, int] = collections.defaultdict(
            lambda: self.command_size_limit
        )
        # Replaced through the override points when the connection is made.
        self.session = Session(self.loop)
        self.envelope = Envelope()
        self._init_connection(
            max_line_length=max(self.line_length_limit, self.command_size_limit + 2),
            timeout=timeout,
        )

    def _set_call_limits(self, limit: int | Mapping[str, int] | None) -> None:
        self._enforce_call_limit = limit is not None
        self._call_limit_default = CALL_LIMIT_DEFAULT
        self._call_limit_base: dict[str, int] = {}
        if limit is None:
            return
        if isinstance(limit, bool) or not isinstance(limit, int | Mapping):
            raise TypeError("command_call_limit must be int or Dict[str, int]")
        if isinstance(limit, int):
            self._call_limit_default = limit
            return
        if not all(isinstance(value, int) for value in limit.values()):
            raise TypeError("All command_call_limit values must be int")
        self._call_limit_base = {key.upper(): value for key, value in limit.items()}
        self._call_limit_default = self._call_limit_base.pop("*", CALL_LIMIT_DEFAULT)

    @property
    def handler(self) -> Any:
        return self.event_handler

    @property
    def max_command_size_limit(self) -> int:
        return max([self.command_size_limit, *self.command_size_limits.values()])

    # -- override points (aiosmtpd's) -----------------------------------------------

    def _create_session(self) -> Session:
        return Session(self.loop)

    def _create_envelope(self) -> Envelope:
        return Envelope()

    def _set_post_data_state(self) -> None:
        self.envelope = self._create_envelope()

    def _set_rset_state(self) -> None:
        self._set_post_data_state()

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._set_rset_state()
        self.session = self._create_session()
        self.session.peer = transport.get_extra_info("peername")
        if transport.get_extra_info("sslcontext") is not None:
            # Implicit TLS (SMTPS): the session is encrypted from the first byte.
            self.session.ssl = _ssl_facts(transport)
            self._tls_protocol = True
        log.info("Peer: %r", self.session.peer)
        self._start_connection(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        log.info("%r connection lost", self.session.peer)
        super().connection_lost(exc)

    def _describe_peer(self) -> PeerType:
        return self.session.peer

    def _encode_reply(self, status: str) -> bytes:
        return status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")

    async def _on_idle_timeout(self) -> None:
        await self.push(f"421 4.4.2 {self.hostname} Error: timeout exceeded")
        self._close_transport()

    # -- the session loop ---------------------------------------------------------------

    async def _serve(self) -> None:
        if self._proxy_timeout is not None and not await self._accept_proxy_header():
            return
        await self.push(f"220 {self.hostname} {self.__ident__}")
        call_limit: collections.defaultdict[str, int] = collections.defaultdict(
            lambda: self._call_limit_default, self._call_limit_base
        )
        self._bogus_budget = BOGUS_LIMIT
        while not self._closing:
            line = await self._next_line()
            if line is None:
                break
            try:
                await self._dispatch(line, call_limit)
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception as error:  # any hook failure becomes a reply
                await self.push(await self._describe_exception(error))

    async def _accept_proxy_header(self) -> bool:
        """PROXY protocol support arrives with the server hardening issue; until
        then a server configured to expect a PROXY header refuses the connection."""
        log.warning("%r PROXY protocol is not supported yet", self.session.peer)
        return False

    async def _dispatch(
        self, line: bytes | LineTooLong, call_limit: collections.defaultdict[str, int]
    ) -> None:
        if isinstance(line, LineTooLong):
            await self.push("500 Command line too long")
            return
        log.info("%r >> %r", self.session.peer, _sanitize(line))
        if not line:
            await self.push("500 Error: bad syntax")
            return
        verb, _, arg_bytes = line.partition(b" ")
        try:
            command = verb.upper().decode("ascii")
        except UnicodeDecodeError:
            await self.push("500 Error: bad syntax")
            return
        arg: str | None = None
        if arg_bytes:
            arg_bytes = arg_bytes.strip()
            if self.enable_SMTPUTF8:
                arg = arg_bytes.decode("utf-8", "surrogateescape")
            elif not arg_bytes.isascii():
                await self.push("500 Error: strict ASCII mode")
                return
            else:
                arg = arg_bytes.decode("ascii")
        limit = (
            self.command_size_limits[command]
            if self.session.extended_smtp
            else self.command_size_limit
        )
        if len(line) > limit:
            await self.push("500 Command line too long")
            return
        if not self._tls_handshake_okay and command != "QUIT":
            await self.push("554 Command refused due to lack of security")
            return
        if (
            self.require_starttls
            and not self._tls_protocol
            and command not in ALLOWED_BEFORE_STARTTLS
        ):
            await self.push("530 Must issue a STARTTLS command first")
            return
        if self._enforce_call_limit:
            budget = call_limit[command]
            if budget < 1:
                log.warning("%r over limit for %s", self.session.peer, command)
                await self.push(f"421 4.7.0 {command} sent too many times")
                self._close_transport()
                return
            call_limit[command] = budget - 1
        method = self._smtp_methods.get(command)
        if method is None:
            log.warning("%r unrecognised: %s", self.session.peer, command)
            self._bogus_budget -= 1
            if self._bogus_budget < 1:
                log.warning("%r too many bogus commands", self.session.peer)
                await self.push("502 5.5.1 Too many unrecognized commands, goodbye.")
                self._close_transport()
                return
            await self.push(f'500 Error: command "{command}" not recognized')
            return
        await method(arg)

    async def handle_exception(self, error: Exception) -> str:
        hook = getattr(self.event_handler, "handle_exception", None)
        if hook is not None:
            status: str = await hook(error)
            return status
        log.exception("%r SMTP session exception", self._describe_peer(), exc_info=error)
        return f"500 Error: ({error.__class__.__name__}) {error}"

    async def _describe_exception(self, error: Exception) -> str:
        status: Any
        try:
            status = await self.handle_exception(error)
        except Exception as inner:  # the hook itself failed
            log.exception("%r Exception in handle_exception()", self._describe_peer())
            try:
                status = f"500 Error: ({inner.__class__.__name__}) {inner}"
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
        hook = self._handle_hooks.get(command)
        if hook is None:
            return MISSING
        return await hook(self, self.session, self.envelope, *args)

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        if not self.session.host_name:
            await self.push(f"503 Error: send {helo} first")
            return True
        return False

    async def check_auth_needed(self, caller_method: str) -> bool:
        if self._auth_required and not self.session.authenticated:
            log.info("%s: Authentication required", caller_method)
            await self.push("530 5.7.0 Authentication required")
            return True
        return False

    def _syntax_available(self, method: Callable[..., Any]) -> bool:
        if not hasattr(method, "__smtp_syntax__"):
            return False
        when = getattr(method, "__smtp_syntax_when__", None)
        return bool(getattr(self, when)) if when else True

    # -- greeting commands ----------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        if not hostname:
            await self.push("501 Syntax: HELO hostname")
            return
        self._set_rset_state()
        self.session.extended_smtp = False
        status = await self._call_handler_hook("HELO", hostname)
        if status is MISSING:
            self.session.host_name = hostname
            status = f"250 {self.hostname}"
        await self.push(status)

    def _ehlo_lines(self) -> list[str]:
        """The planned EHLO reply, in aiosmtpd's keyword order."""
        lines = [f"250-{self.hostname}"]
        mail_limit = self.command_size_limit
        if self.data_size_limit:
            lines.append(f"250-SIZE {self.data_size_limit}")
            mail_limit += 26
        if not self._decode_data:
            lines.append("250-8BITMIME")
        if self.enable_SMTPUTF8:
            lines.append("250-SMTPUTF8")
            mail_limit += 10
        # Per connection (aiosmtpd keeps these in one class-level dict, so they
        # grow with every EHLO and leak between connections).
        self.command_size_limits["MAIL"] = mail_limit
        if self.tls_context and not self._tls_protocol:
            lines.append("250-STARTTLS")
        if self._auth_methods and (not self._auth_require_tls or self._tls_protocol):
            lines.append("250-AUTH " + " ".join(sorted(self._auth_methods)))
        return lines

    async def _greet_extended(self, hostname: str | None, verb: str) -> None:
        if not hostname:
            await self.push(f"501 Syntax: {verb} hostname")
            return
        self._set_rset_state()
        self.session.extended_smtp = True
        lines = self._ehlo_lines()
        if hasattr(self, "ehlo_hook"):
            warnings.warn(
                "Use handler.handle_EHLO() instead of .ehlo_hook()",
                DeprecationWarning,
                stacklevel=2,
            )
            await self.ehlo_hook()
        if self._ehlo_hook_ver is None:
            self.session.host_name = hostname
            lines.append("250 HELP")
        elif self._ehlo_hook_ver == "old":
            for line in lines:
                await self.push(line)
            lines = [await self._call_handler_hook("EHLO", hostname)]
        else:
            lines.append("250 HELP")
            lines = list(await self._call_handler_hook("EHLO", hostname, lines))
        for line in lines:
            await self.push(line)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._greet_extended(hostname, "EHLO")

    # -- simple commands ---------------------------------------------------------------------

    @syntax("NOOP [ignored]")
    async def smtp_NOOP(self, arg: str | None) -> None:
        status = await self._call_handler_hook("NOOP", arg)
        await self.push("250 OK" if status is MISSING else status)

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str | None) -> None:
        if arg:
            await self.push("501 Syntax: QUIT")
            return
        status = await self._call_handler_hook("QUIT")
        await self.push("221 Bye" if status is MISSING else status)
        self._close_transport()

    @syntax("RSET")
    async def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            await self.push("501 Syntax: RSET")
            return
        self._set_rset_state()
        if hasattr(self, "rset_hook"):
            warnings.warn(
                "Use handler.handle_RSET() instead of .rset_hook()",
                DeprecationWarning,
                stacklevel=2,
            )
            await self.rset_hook()
        status = await self._call_handler_hook("RSET")
        await self.push("250 OK" if status is MISSING else status)

    @syntax("HELP [command]")
    async def smtp_HELP(self, arg: str | None) -> None:
        if await self.check_auth_needed("HELP"):
            return
        code = 250
        if arg:
            method = self._smtp_methods.get(arg.upper())
            if method is not None and self._syntax_available(method):
                text = method.__smtp_syntax__  # type: ignore[attr-defined]
                extended = method.__smtp_syntax_extended__  # type: ignore[attr-defined]
                if self.session.extended_smtp and extended:
                    text += extended
                await self.push(f"250 Syntax: {text}")
                return
            code = 501
        commands = sorted(
            name for name, method in self._smtp_methods.items() if self._syntax_available(method)
        )
        await self.push(f"{code} Supported commands: {' '.join(commands)}")

    @syntax("VRFY <address>")
    async def smtp_VRFY(self, arg: str | None) -> None:
        if await self.check_auth_needed("VRFY"):
            return
        if not arg:
            await self.push("501 Syntax: VRFY <address>")
            return
        address = parse_verify_argument(arg, utf8=self.enable_SMTPUTF8)
        if address is None:
            await self.push(f"502 Could not VRFY {arg}")
            return
        status = await self._call_handler_hook("VRFY", address)
        await self.push(
            "252 Cannot VRFY user, but will accept message and attempt delivery"
            if status is MISSING
            else status
        )

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self.push("502 EXPN not implemented")

    # -- STARTTLS and AUTH -------------------------------------------------------------------

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context or self._tls_protocol:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        await self._start_tls(self.tls_context)

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        # Whatever the client sent after STARTTLS arrived in plaintext and must
        # never be executed (CVE-2011-0411, aiosmtpd's CVE-2024-34083).
        await self._flush_and_drain()
        self._discard_input()
        transport = self.transport
        if transport is None:
            return
        try:
            tls_transport = await self.loop.start_tls(transport, self, context, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError, asyncio.TimeoutError) as error:
            log.info("%r STARTTLS handshake failed: %s", self._describe_peer(), error)
            raise TLSSetupException("TLS handshake failed") from error
        if tls_transport is None:  # pragma: no cover - only when the loop is closing
            raise TLSSetupException("TLS handshake did not complete")
        self._discard_input()
        self.transport = tls_transport
        peer = self._describe_peer()
        self._set_rset_state()
        self.session = self._create_session()
        self.session.peer = peer
        self.session.ssl = _ssl_facts(tls_transport)
        self._tls_protocol = True
        hook = self._handle_hooks.get("STARTTLS")
        if hook is not None:
            self._tls_handshake_okay = bool(hook(self, self.session, self.envelope))

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        await run_auth(self, arg)

    async def challenge_auth(
        self,
        challenge: str | bytes,
        encode_to_b64: bool = True,
        log_client_response: bool = False,
    ) -> bytes | Any:
        """Send a ``334`` challenge and return the client's decoded answer, or
        MISSING after a ``501`` (aborted or undecodable answer)."""
        return await challenge_client(self, challenge, encode_to_b64, log_client_response)

    async def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        return await authenticate(self, mechanism, auth_data)

    async def auth_PLAIN(self, _: SMTP, args: list[str]) -> AuthResult:
        return await auth_plain(self, args)

    async def auth_LOGIN(self, _: SMTP, args: list[str]) -> AuthResult:
        return await auth_login(self, args)

    # -- the mail transaction -----------------------------------------------------------------

    def _path_syntax_error(self, verb: str) -> str:
        text = f"501 Syntax: {verb} <address>"
        return text + " [SP <mail-parameters>]" if self.session.extended_smtp else text

    async def _parse_path_or_reply(
        self, arg: str | None, keyword: str, syntax_error: str
    ) -> tuple[str, list[str]] | None:
        """The address and upper-cased parameters, or None after an error reply."""
        try:
            address, parameters = parse_path(
                arg,
                keyword,
                utf8=self.enable_SMTPUTF8,
                max_local_part=self.local_part_limit or None,
                allow_null=keyword == "FROM:",
            )
        except PathError as error:
            malformed = "553 5.1.3 Error: malformed address"
            await self.push(malformed if error.malformed else syntax_error)
            return None
        if parameters and not self.session.extended_smtp:
            await self.push(syntax_error)
            return None
        return address, parameters

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        syntax_error = self._path_syntax_error("MAIL FROM:")
        parsed = await self._parse_path_or_reply(arg, "FROM:", syntax_error)
        if parsed is None:
            return
        address, mail_options = parsed
        if self.envelope.mail_from:
            await self.push("503 Error: nested MAIL command")
            return
        error = self._check_mail_options(mail_options, syntax_error)
        if error is not None:
            await self.push(error)
            return
        self.envelope.smtp_utf8 = "SMTPUTF8" in mail_options
        status = await self._call_handler_hook("MAIL", address, mail_options)
        if status is MISSING:
            self.envelope.mail_from = address
            self.envelope.mail_options.extend(mail_options)
            status = "250 OK"
        log.info("%r sender: %s", self.session.peer, address)
        await self.push(status)

    def _check_mail_options(self, mail_options: list[str], syntax_error: str) -> str | None:
        """The error reply for MAIL parameters this server does not take, if any."""
        params: dict[str, str | None] = {}
        for option in mail_options:
            keyword, equals, value = option.partition("=")
            params[keyword] = value if equals else None
        if not self._decode_data and params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            return "501 Error: BODY can only be one of 7BIT, 8BITMIME"
        if "SMTPUTF8" in params:
            if params.pop("SMTPUTF8") is not None:
                return "501 Error: SMTPUTF8 takes no arguments"
            if not self.enable_SMTPUTF8:
                return "501 Error: SMTPUTF8 disabled"
        if "SIZE" in params:
            size = params.pop("SIZE")
            if size is None or not (size.isascii() and size.isdigit()):
                return syntax_error
            if self.data_size_limit and int(size) > self.data_size_limit:
                return "552 Error: message size exceeds fixed maximum message size"
        if params:
            return "555 MAIL FROM parameters not recognized or not implemented"
        return None

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        if not self.envelope.mail_from:
            await self.push("503 Error: need MAIL command")
            return
        syntax_error = self._path_syntax_error("RCPT TO:")
        parsed = await self._parse_path_or_reply(arg, "TO:", syntax_error)
        if parsed is None:
            return
        address, rcpt_options = parsed
        if rcpt_options:
            await self.push("555 RCPT TO parameters not recognized or not implemented")
            return
        status = await self._call_handler_hook("RCPT", address, rcpt_options)
        if status is MISSING:
            self.envelope.rcpt_tos.append(address)
            self.envelope.rcpt_options.extend(rcpt_options)
            status = "250 OK"
        log.info("%r recip: %s", self.session.peer, address)
        await self.push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        if not await self._receive_content():
            return
        await self._deliver()

    def _data_decoder(self) -> DataDecoder:
        return DataDecoder(
            max_size=self.data_size_limit or None, max_line_length=self.line_length_limit
        )

    async def _receive_content(self) -> bool:
        """Read the message into the envelope; False (after any error reply) if
        there is nothing to deliver."""
        decoder = self._data_decoder()
        chunks = await self._read_message(decoder)
        if chunks is None:
            log.info("%r connection lost during DATA", self._describe_peer())
            self._set_post_data_state()
            return False
        if decoder.violation is not None:
            self._set_post_data_state()
            if decoder.violation is DataViolation.TOO_LARGE:
                await self.push("552 Error: Too much mail data")
            else:
                await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            return False
        original_content = b"".join(chunks)
        chunks.clear()
        content: bytes | str = original_content
        if self._decode_data:
            if self.enable_SMTPUTF8:
                content = original_content.decode("utf-8", "surrogateescape")
            elif not original_content.isascii():
                self._set_post_data_state()
                await self.push("500 Error: strict ASCII mode")
                return False
            else:
                content = original_content.decode("ascii")
        self.envelope.content = content
        self.envelope.original_content = original_content
        return True

    async def _deliver(self) -> None:
        """Hand the received message to the handler and reply."""
        status = await self._call_data_hook()
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _call_data_hook(self) -> Any:
        if "DATA" in self._handle_hooks:
            return await self._call_handler_hook("DATA")
        process_message = getattr(self.event_handler, "process_message", None)
        if process_message is None:
            return MISSING
        warnings.warn(
            "Use handler.handle_DATA() instead of .process_message()",
            DeprecationWarning,
            stacklevel=2,
        )
        result = process_message(
            self.session.peer,
            self.envelope.mail_from,
            self.envelope.rcpt_tos,
            self.envelope.content,
        )
        if inspect.isawaitable(result):
            result = await result
        return MISSING if result is None else result


def _current_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return asyncio.get_event_loop_policy().get_event_loop()


def _ssl_facts(transport: asyncio.BaseTransport) -> dict[str, Any]:
    """What aiosmtpd users read from ``session.ssl`` after the handshake."""
    names = ("peercert", "cipher", "compression", "ssl_object", "sslcontext", "peername")
    return {name: transport.get_extra_info(name) for name in names}


def _sanitize(line: bytes) -> bytes:
    """Keep credentials out of logs: an AUTH line shows only its mechanism."""
    if line[:5].upper() == b"AUTH ":
        words = line.split(b" ")
        return b" ".join([*words[:2], b"********"]) if len(words) > 2 else line
    return line
