"""The AUTH command (RFC 4954) with aiosmtpd's hook model and reply texts.

:class:`AuthMixin` is the whole of the server's AUTH: its settings and state, the
command, the challenge/response exchange, the built-in mechanisms and the call
of the authenticator.  :class:`~smtpwire.server.smtp.SMTP` inherits it through the
session engine (:class:`~smtpwire.server._protocol.SessionProtocol`), and the
few things it needs from the engine are declared at the top of the class, so
this module imports nothing of the engine.

Mechanisms are methods named ``auth_<NAME>`` on the SMTP object (the built-in
PLAIN and LOGIN) or on the handler (which wins); ``auth_X__Y`` serves ``X-Y``,
and :func:`auth_mechanism` names any other.  Unlike aiosmtpd, the mechanism a
client names is matched case-insensitively (RFC 4954 section 4; aiosmtpd's issue
#305) and an authenticator may be a coroutine.
"""

from __future__ import annotations

import base64
import inspect
import logging
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeVar

from smtpwire.common.errors import SASLDecodeError
from smtpwire.common.lines import LineTooLong
from smtpwire.common.sasl import (
    b64decode,
    b64encode,
    cram_md5_challenge,
    cram_md5_verify,
    decode_cram_md5,
)
from smtpwire.common.server_session import ServerSession

from ._discovery import SharedTables, method_names
from ._syntax import syntax
from .auth_limits import AUTH_THROTTLED, AuthFailureLimiter, client_address
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
    "VALID_AUTHMECH",
    "AuthMethod",
    "AuthMixin",
    "CramMD5Secret",
    "auth_mechanism",
    "check_mechanism_name",
    "login_always_fail",
]

log = logging.getLogger("mail.log")

VALID_AUTHMECH: Final = re.compile(r"[A-Z0-9_-]+\Z")
CODE_SUCCESS: Final = "235 2.7.0 Authentication successful"
CODE_INVALID: Final = "535 5.7.8 Authentication credentials invalid"


# CRAM-MD5 needs the plaintext secret: ``cram_md5_secret(username)`` returns it (or
# an awaitable of it), or None for an unknown user.
CramMD5Secret = Callable[[bytes], "str | bytes | Awaitable[str | bytes | None] | None"]

_Method = TypeVar("_Method", bound=Callable[..., Any])


def check_mechanism_name(name: str) -> str:
    upper = name.upper()
    if not VALID_AUTHMECH.match(upper):
        raise ValueError(f"Invalid AUTH mechanism name: {name!r}")
    return upper


def auth_mechanism(actual_name: str) -> Callable[[_Method], _Method]:
    """Give an ``auth_*`` method a mechanism name a Python identifier cannot spell."""
    name = check_mechanism_name(actual_name)

    def decorator(function: _Method) -> _Method:
        function.__auth_mechanism_name__ = name  # type: ignore[attr-defined]
        return function

    return decorator


def login_always_fail(mechanism: str, login: bytes, password: bytes) -> bool:
    return False


class AuthMethod(NamedTuple):
    """A mechanism: the method named ``attribute`` of the server (built in) or of
    its handler, looked up when called so that one table serves every connection."""

    is_builtin: bool
    attribute: str

    def call(self, server: AuthMixin, args: list[str]) -> Awaitable[Any]:
        # Every mechanism is called as method(server, args); the server's own bound
        # methods therefore take the server a second time, as an ignored argument.
        owner = server if self.is_builtin else server.event_handler
        method: Callable[[AuthMixin, list[str]], Awaitable[Any]] = getattr(owner, self.attribute)
        return method(server, args)


def _mechanisms_of(owner: Any, names: tuple[str, ...], builtin: bool) -> dict[str, AuthMethod]:
    found = {}
    for attribute in names:
        name = getattr(getattr(owner, attribute), "__auth_mechanism_name__", None)
        if name is None:
            name = attribute[5:].replace("__", "-")
        found[check_mechanism_name(name)] = AuthMethod(builtin, attribute)
    return found


_AUTH_TABLES: Final = SharedTables()


def discover_auth_methods(
    server: object, handler: Any, excluded: Iterable[str], *, cram_md5: bool = False
) -> Mapping[str, AuthMethod]:
    """The mechanisms of ``server`` and ``handler`` (the handler's win), without
    ``excluded``, with CRAM-MD5 when the server has a secret lookup for it.  The
    table is shared by every connection of the same classes and options."""
    own_names = method_names(server, "auth_")
    handler_names = method_names(handler, "auth_")
    leave_out = frozenset(name.upper() for name in excluded)
    key = (own_names, type(handler), handler_names, leave_out, cram_md5)
    methods: Mapping[str, AuthMethod] | None = _AUTH_TABLES.get(type(server), key)
    if methods is None:
        table = _mechanisms_of(server, own_names, builtin=True)
        table.update(_mechanisms_of(handler, handler_names, builtin=False))
        if cram_md5:
            # Not an ``auth_*`` name: offered only when there is a secret lookup.
            table.setdefault("CRAM-MD5", AuthMethod(True, "_auth_cram_md5"))
        for name in leave_out:
            table.pop(name, None)
        methods = _AUTH_TABLES.put(type(server), key, MappingProxyType(table))
    if log.isEnabledFor(logging.INFO):
        described = (
            f"{name}(builtin)" if method.is_builtin else name
            for name, method in sorted(methods.items())
        )
        log.info("Available AUTH mechanisms: %s", " ".join(described))
    return methods


class AuthMixin:
    """AUTH for :class:`~smtpwire.server.smtp.SMTP`, with aiosmtpd's attribute and
    method names (users' subclasses override ``smtp_AUTH``, ``challenge_auth``,
    ``_authenticate``, ``auth_PLAIN``…; their tests read ``_auth_methods``…).

    It comes after Connection among the engine's bases, so that the engine's
    methods, not the stubs below, answer for what the engine provides."""

    AuthLoginUsernameChallenge = "User Name\x00"
    AuthLoginPasswordChallenge = "Password\x00"

    # Set by _init_auth from the constructor's arguments.
    _auth_required: bool
    _auth_require_tls: bool
    _authenticator: AuthenticatorType | None
    _auth_callback: AuthCallbackType
    _cram_md5_secret: CramMD5Secret | None
    _auth_methods: Mapping[str, AuthMethod]
    _auth_failure_limiter: AuthFailureLimiter | None

    # -- what the session engine provides -----------------------------------------------

    session: Session
    envelope: Envelope
    event_handler: Any
    hostname: str
    _tls_protocol: Any  # true once the connection is encrypted
    _state_machine: ServerSession

    async def _reply(self, status: str | bytes) -> None:
        raise NotImplementedError

    async def _next_line(self) -> bytes | LineTooLong | None:
        raise NotImplementedError

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        raise NotImplementedError

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        raise NotImplementedError

    def _describe_peer(self) -> PeerType:
        raise NotImplementedError

    # -- setup and the other commands' view of AUTH -------------------------------------

    def _init_auth(
        self,
        handler: Any,
        *,
        auth_required: bool,
        auth_require_tls: bool,
        auth_exclude_mechanism: Iterable[str],
        auth_callback: AuthCallbackType | None,
        authenticator: AuthenticatorType | None,
        cram_md5_secret: CramMD5Secret | None,
        auth_failure_limiter: AuthFailureLimiter | None = None,
    ) -> None:
        """Called by the constructor, whose arguments these are."""
        self._auth_failure_limiter = auth_failure_limiter
        self._auth_required = auth_required
        self._auth_require_tls = auth_require_tls
        if auth_required and not auth_require_tls:
            warnings.warn(
                "Requiring AUTH while not requiring TLS can lead to security vulnerabilities!",
                UserWarning,
                stacklevel=3,  # the constructor's caller
            )
            log.warning("auth_required == True but auth_require_tls == False")
        self._authenticator = authenticator
        self._auth_callback = auth_callback or login_always_fail
        self._cram_md5_secret = cram_md5_secret
        self._auth_methods = discover_auth_methods(
            self, handler, auth_exclude_mechanism, cram_md5=cram_md5_secret is not None
        )

    def _ehlo_auth_line(self) -> str | None:
        """EHLO's AUTH line, or None while AUTH is not on offer."""
        if self._auth_methods and (not self._auth_require_tls or self._tls_protocol):
            return "250-AUTH " + " ".join(sorted(self._auth_methods))
        return None

    async def check_auth_needed(self, caller_method: str) -> bool:
        refusal = self._state_machine.auth_refusal()
        if refusal is not None:
            log.info("%s: Authentication required", caller_method)
            await self._reply(refusal)
            return True
        return False

    # -- the command --------------------------------------------------------------------

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str | None) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        session = self.session
        if not session.extended_smtp:
            await self._reply("500 Error: command 'AUTH' not recognized")
            return
        if self._auth_require_tls and not self._tls_protocol:
            await self._reply(
                "538 5.7.11 Encryption required for requested authentication mechanism"
            )
            return
        if session.authenticated:
            await self._reply("503 Already authenticated")
            return
        if not arg:
            await self._reply("501 Not enough value")
            return
        args = arg.split()
        if len(args) > 2:
            await self._reply("501 Too many values")
            return
        args[0] = args[0].upper()
        auth_method = self._auth_methods.get(args[0])
        if auth_method is None:
            await self._reply("504 5.5.4 Unrecognized authentication type")
            return
        if self._auth_throttled():
            log.warning("%r AUTH throttled: too many failures", self._describe_peer())
            await self._reply(AUTH_THROTTLED)
            return
        status = await self._call_handler_hook("AUTH", args)
        if status is MISSING:
            result = await auth_method.call(self, args)
            status = self._record_auth_result(result)
        if status is not None:
            await self._reply(status)

    def _record_auth_result(self, result: Any) -> str | None:
        """Keep what a mechanism decided on the session; the reply to send (None:
        the mechanism already replied)."""
        session = self.session
        if isinstance(result, AuthResult):
            if result.success:
                session.authenticated = True
                session.auth_data = result.auth_data
                session.login_data = getattr(result.auth_data, "login", None)
                return result.message or CODE_SUCCESS
            if result.handled:
                return None
            return result.message or CODE_INVALID
        if result is None:
            return None
        if result is MISSING or result is False:
            return CODE_INVALID
        # A legacy mechanism returned its login data.
        session.authenticated = True
        session.login_data = result
        return CODE_SUCCESS

    # -- the exchange -------------------------------------------------------------------

    async def challenge_auth(
        self,
        challenge: str | bytes,
        encode_to_b64: bool = True,
        log_client_response: bool = False,
    ) -> bytes | Any:
        """Send a ``334`` challenge and return the client's decoded answer, or
        MISSING after a ``501`` (aborted or undecodable answer)."""
        raw = challenge.encode() if isinstance(challenge, str) else challenge
        # An empty challenge is "334 " with nothing after it, as aiosmtpd sends for PLAIN.
        line = b"334 " + (base64.b64encode(raw) if encode_to_b64 else raw)
        await self._reply(line)
        answer = await self._next_line()
        if log_client_response:
            # As aiosmtpd, on every call and whatever the answer: the answer may be
            # a password, so whoever turned this on is told each time it is used.
            warnings.warn("AUTH interaction logging is enabled!", UserWarning, stacklevel=2)
            warnings.warn("Sensitive information might be leaked!", UserWarning, stacklevel=2)
        if answer is None:
            return MISSING
        if isinstance(answer, LineTooLong):
            await self._reply("500 5.5.6 Authentication Exchange line is too long")
            return MISSING
        if log_client_response:
            log.debug("%r >> %r", self._describe_peer(), answer)
        blob = answer.strip()
        if blob == b"*":
            log.warning("%r aborted AUTH with '*'", self._describe_peer())
            await self._reply("501 5.7.0 Auth aborted")
            return MISSING
        try:
            return b64decode(blob)
        except SASLDecodeError:
            await self._reply("501 5.5.2 Can't decode base64")
            return MISSING

    async def _initial_response(self, args: list[str], challenge: str) -> bytes | None:
        """The client's first answer: the initial response in ``args[1]`` if given,
        else the answer to ``challenge``; None when a ``501`` already went out."""
        if len(args) == 1:
            answer = await self.challenge_auth(challenge)
            return None if answer is MISSING else bytes(answer)
        try:
            return b64decode(args[1])
        except SASLDecodeError:
            await self._reply("501 5.5.2 Can't decode base64")
            return None

    async def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        """Check credentials: the ``authenticator`` if there is one, else the
        ``auth_callback`` (aiosmtpd's override point)."""
        if self._authenticator is not None:
            session, envelope = self.session, self.envelope
            result = self._authenticator(self, session, envelope, mechanism, auth_data)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, AuthResult):
                raise TypeError(f"authenticator returned {result!r}, not an AuthResult")
            if not result.success:
                self._auth_failed()
            return result
        login, password = auth_data
        if self._auth_callback(mechanism, login, password):
            return AuthResult(success=True, handled=True, auth_data=auth_data)
        self._auth_failed()
        return AuthResult(success=False, handled=False)

    def _auth_throttled(self) -> bool:
        limiter = self._auth_failure_limiter
        address = self._client_address()
        return limiter is not None and address is not None and limiter.throttled(address)

    def _auth_failed(self) -> None:
        """Credentials were checked and refused: count it for the client's address."""
        limiter = self._auth_failure_limiter
        address = self._client_address()
        if limiter is not None and address is not None:
            limiter.record_failure(address)

    def _client_address(self) -> str | None:
        """The client's address: behind a proxy, the one its PROXY header names
        (``session.peer`` stays the proxy's, as in aiosmtpd), or every client
        behind it would share one failure budget."""
        proxied = self.session.proxy_data
        source = getattr(proxied, "src_addr", None) if getattr(proxied, "valid", False) else None
        if source is not None:
            return str(source)
        return client_address(self.session.peer)

    # -- the built-in mechanisms ----------------------------------------------------------

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        answer = await self._initial_response(args, "")
        if answer is None:
            return AuthResult(success=False, handled=True)
        parts = answer.split(b"\x00")
        if len(parts) != 3:
            await self._reply("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._authenticate("PLAIN", LoginPassword(parts[1], parts[2]))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = await self._initial_response(args, self.AuthLoginUsernameChallenge)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._authenticate("LOGIN", LoginPassword(login, password))

    async def _auth_cram_md5(self, _: Any, args: list[str]) -> AuthResult:
        """CRAM-MD5 (RFC 2195), offered when the server has a ``cram_md5_secret``
        lookup: a fresh CSPRNG challenge, the digest checked in constant time.  The
        authenticator is not consulted (it never sees a password here)."""
        if len(args) > 1:
            await self._reply("501 5.5.2 CRAM-MD5 takes no initial response")
            return AuthResult(success=False, handled=True)
        challenge = cram_md5_challenge(self.hostname)
        answer = await self.challenge_auth(challenge)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        try:
            username, digest = decode_cram_md5(b64encode(bytes(answer)))
        except SASLDecodeError:
            await self._reply("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        lookup = self._cram_md5_secret
        secret = None if lookup is None else lookup(username)
        if inspect.isawaitable(secret):
            secret = await secret
        if secret is None or not cram_md5_verify(digest, challenge, secret):
            self._auth_failed()
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=username)
