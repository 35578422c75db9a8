"""The AUTH command (RFC 4954) with aiosmtpd's hook model and reply texts.

Mechanisms are methods named ``auth_<NAME>`` on the SMTP object (the built-in
PLAIN and LOGIN) or on the handler (which wins); ``auth_X__Y`` serves ``X-Y``,
and :func:`~smtpwire.server.smtp.auth_mechanism` names any other.  Unlike
aiosmtpd, the mechanism a client names is matched case-insensitively (RFC 4954
section 4; aiosmtpd's issue #305) and an authenticator may be a coroutine.
"""

from __future__ import annotations

import base64
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from smtpwire.common.errors import SASLDecodeError
from smtpwire.common.lines import LineTooLong
from smtpwire.common.sasl import (
    b64decode,
    b64encode,
    cram_md5_challenge,
    cram_md5_verify,
    decode_cram_md5,
)

from ._discovery import SharedTables, method_names
from .session import MISSING, AuthResult, LoginPassword

if TYPE_CHECKING:
    from .smtp import SMTP

__all__ = [
    "AuthMethod",
    "CramMD5Secret",
    "auth_cram_md5",
    "authenticate",
    "challenge_client",
    "check_mechanism_name",
    "discover_auth_methods",
    "run_auth",
]

log = logging.getLogger("mail.log")

VALID_AUTHMECH: Final = re.compile(r"[A-Z0-9_-]+\Z")
CODE_SUCCESS: Final = "235 2.7.0 Authentication successful"
CODE_INVALID: Final = "535 5.7.8 Authentication credentials invalid"


# CRAM-MD5 needs the plaintext secret: ``cram_md5_secret(username)`` returns it (or
# an awaitable of it), or None for an unknown user.
CramMD5Secret = Callable[[bytes], "str | bytes | Awaitable[str | bytes | None] | None"]


class AuthMethod(NamedTuple):
    """A mechanism: ``attribute`` of the server (built in) or of its handler, looked
    up when called so that one table serves every connection; or a ``function``."""

    is_builtin: bool
    attribute: str = ""
    function: Callable[[SMTP, list[str]], Awaitable[Any]] | None = None

    def call(self, server: SMTP, args: list[str]) -> Awaitable[Any]:
        # Every mechanism is called as method(server, args); the server's own bound
        # methods therefore take the server a second time, as an ignored argument.
        if self.function is not None:
            return self.function(server, args)
        owner = server if self.is_builtin else server.event_handler
        method: Callable[[SMTP, list[str]], Awaitable[Any]] = getattr(owner, self.attribute)
        return method(server, args)


def check_mechanism_name(name: str) -> str:
    upper = name.upper()
    if not VALID_AUTHMECH.match(upper):
        raise ValueError(f"Invalid AUTH mechanism name: {name!r}")
    return upper


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
            table.setdefault("CRAM-MD5", AuthMethod(True, function=auth_cram_md5))
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


async def run_auth(server: SMTP, arg: str | None) -> None:
    if await server.check_helo_needed("EHLO"):
        return
    session = server.session
    if not session.extended_smtp:
        await server._reply("500 Error: command 'AUTH' not recognized")
        return
    if server._auth_require_tls and not server._tls_protocol:
        await server._reply("538 5.7.11 Encryption required for requested authentication mechanism")
        return
    if session.authenticated:
        await server._reply("503 Already authenticated")
        return
    if not arg:
        await server._reply("501 Not enough value")
        return
    args = arg.split()
    if len(args) > 2:
        await server._reply("501 Too many values")
        return
    args[0] = args[0].upper()
    auth_method = server._auth_methods.get(args[0])
    if auth_method is None:
        await server._reply("504 5.5.4 Unrecognized authentication type")
        return
    status = await server._call_handler_hook("AUTH", args)
    if status is MISSING:
        result = await auth_method.call(server, args)
        status = _status_of(server, result)
    if status is not None:
        await server._reply(status)


def _status_of(server: SMTP, result: Any) -> str | None:
    """The reply for what a mechanism returned (None: it already replied)."""
    session = server.session
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


async def challenge_client(
    server: SMTP, challenge: str | bytes, encode_to_b64: bool, log_client_response: bool
) -> bytes | Any:
    raw = challenge.encode() if isinstance(challenge, str) else challenge
    # An empty challenge is "334 " with nothing after it, as aiosmtpd sends for PLAIN.
    line = b"334 " + (base64.b64encode(raw) if encode_to_b64 else raw)
    await server._reply(line)
    answer = await server._next_line()
    if answer is None:
        return MISSING
    if isinstance(answer, LineTooLong):
        await server._reply("500 5.5.6 Authentication Exchange line is too long")
        return MISSING
    if log_client_response:
        log.debug("%r >> %r", server._describe_peer(), answer)
    blob = answer.strip()
    if blob == b"*":
        log.warning("%r aborted AUTH with '*'", server._describe_peer())
        await server._reply("501 5.7.0 Auth aborted")
        return MISSING
    try:
        return b64decode(blob)
    except SASLDecodeError:
        await server._reply("501 5.5.2 Can't decode base64")
        return MISSING


async def authenticate(server: SMTP, mechanism: str, auth_data: Any) -> AuthResult:
    if server._authenticator is not None:
        session, envelope = server.session, server.envelope
        result = server._authenticator(server, session, envelope, mechanism, auth_data)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, AuthResult):
            raise TypeError(f"authenticator returned {result!r}, not an AuthResult")
        return result
    login, password = auth_data
    if server._auth_callback(mechanism, login, password):
        return AuthResult(success=True, handled=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False)


async def first_response(server: SMTP, args: list[str], challenge: str) -> bytes | None:
    """The client's first answer: the initial response in ``args[1]`` if given,
    else the answer to ``challenge``; None when a ``501`` already went out."""
    if len(args) == 1:
        answer = await server.challenge_auth(challenge)
        return None if answer is MISSING else bytes(answer)
    try:
        return b64decode(args[1])
    except SASLDecodeError:
        await server._reply("501 5.5.2 Can't decode base64")
        return None


async def auth_plain(server: SMTP, args: list[str]) -> AuthResult:
    answer = await first_response(server, args, "")
    if answer is None:
        return AuthResult(success=False, handled=True)
    parts = answer.split(b"\x00")
    if len(parts) != 3:
        await server._reply("501 5.5.2 Can't split auth value")
        return AuthResult(success=False, handled=True)
    return await server._authenticate("PLAIN", LoginPassword(parts[1], parts[2]))


async def auth_login(server: SMTP, args: list[str]) -> AuthResult:
    login = await first_response(server, args, server.AuthLoginUsernameChallenge)
    if login is None:
        return AuthResult(success=False, handled=True)
    password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
    if password is MISSING:
        return AuthResult(success=False, handled=True)
    return await server._authenticate("LOGIN", LoginPassword(login, password))


async def auth_cram_md5(server: SMTP, args: list[str]) -> AuthResult:
    """CRAM-MD5 (RFC 2195), offered when the server has a ``cram_md5_secret``
    lookup: a fresh CSPRNG challenge, the digest checked in constant time.  The
    authenticator is not consulted (it never sees a password here)."""
    if len(args) > 1:
        await server._reply("501 5.5.2 CRAM-MD5 takes no initial response")
        return AuthResult(success=False, handled=True)
    challenge = cram_md5_challenge(server.hostname)
    answer = await server.challenge_auth(challenge)
    if answer is MISSING:
        return AuthResult(success=False, handled=True)
    try:
        username, digest = decode_cram_md5(b64encode(bytes(answer)))
    except SASLDecodeError:
        await server._reply("501 5.5.2 Can't split auth value")
        return AuthResult(success=False, handled=True)
    lookup = server._cram_md5_secret
    secret = None if lookup is None else lookup(username)
    if inspect.isawaitable(secret):
        secret = await secret
    if secret is None or not cram_md5_verify(digest, challenge, secret):
        return AuthResult(success=False, handled=False)
    return AuthResult(success=True, auth_data=username)
