"""A receiving SMTP server for tests: a :class:`Controller` thread serving the modern
extension set on a free loopback port, with an inbox, fault rules, a transcript per
session and, when asked, STARTTLS, implicit TLS, AUTH and the inbox over HTTP
(``web=True``: the web inbox, with the fault rules, for tests in another process).

It runs in its own thread with its own event loop, so sync tests and async tests
(whatever their loop) use it alike.
"""

from __future__ import annotations

import collections
import errno
import importlib.util
import os
import shutil
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from smtpwire.common.commands import parse_mail_from, parse_rcpt_to
from smtpwire.common.errors import ProtocolError
from smtpwire.server.controller import Controller
from smtpwire.server.observe import Intervention, Observer
from smtpwire.server.session import AuthResult, Envelope, LoginPassword
from smtpwire.server.smtp import SMTP

from ._certs import TestCertificates, make_certificates
from ._faults import FaultRules
from ._inbox import Inbox, ReceivedMessage

if TYPE_CHECKING:
    from ._web import TestWebInbox

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "ListenError",
    "SMTPTestServer",
    "TLSMode",
    "TestingObserver",
    "TestingSMTP",
    "WebInboxUnavailable",
]

TLSMode = Literal["none", "starttls", "implicit"]
DEFAULT_USERNAME: Final = "user@example.com"
DEFAULT_PASSWORD: Final = "correct horse battery staple"  # noqa: S105 - a test account
TRANSCRIPT_LINES: Final = 2000  # kept per connection (the oldest are dropped first)


class ListenError(OSError):
    """The test server could not listen where it was told to (the port is taken, the
    address is not this machine's); ``errno`` is the socket error's.  The message is
    one line, naming the address and where it was set."""


class WebInboxUnavailable(RuntimeError):
    """``web=True`` was asked for, and aiohttp, which serves it, is not installed.
    The message is one line saying what to install."""


def _check_web_available() -> None:
    # Asked when the server is made, not when it starts: a fixture fails before
    # anything listens, with a line that says what to do.
    if importlib.util.find_spec("aiohttp") is None:
        raise WebInboxUnavailable(
            "smtpwire test server: web=True needs aiohttp, which is not installed "
            "(pip install 'smtpwire-server[web]')"
        )


class _State:
    """What every session of one test server shares."""

    def __init__(self, faults: FaultRules, inbox: Inbox) -> None:
        self.faults = faults
        self.inbox = inbox
        self.web: TestWebInbox | None = None  # while the server runs with web=True


class TestingObserver(Observer):
    """What the test server does beside each session (one observer per connection):
    keeps its transcript, applies the fault rules, and files each accepted message
    in the inbox as its 250 is written (see :mod:`smtpwire.server.observe`)."""

    __test__ = False

    def __init__(self, testing: _State) -> None:
        self._testing = testing
        self._transcript: collections.deque[str] = collections.deque(maxlen=TRANSCRIPT_LINES)

    def command_received(self, server: SMTP, line: bytes) -> None:
        self._transcript.append("C: " + _text(line.rstrip(b"\r")))  # AUTH: masked

    def reply_sent(self, server: SMTP, reply: bytes) -> None:
        self._transcript.append(f"S: {_text(reply)}")  # as it goes out: enhanced code and all

    def intercept(self, server: SMTP, command: str, line: bytes) -> Intervention | None:
        if command == "MESSAGE":
            size = len(server.envelope.original_content or b"")
            self._transcript.append(f"C: <message, {size} octets>")
        fault = self._testing.faults.match(command, _addresses(server, command, line))
        if fault is None:
            return None
        return Intervention(reply=fault.reply, delay=fault.delay, drop=fault.drop)

    def transcript(self) -> tuple[str, ...]:
        """The lines since the previous accepted message (from the greeting)."""
        return tuple(self._transcript)

    def message_accepted(self, server: SMTP, envelope: Envelope, replies: Sequence[str]) -> None:
        # Filed before its 250 is written, in the same step of the loop: a client
        # that has its 250 finds the message in the inbox.
        self._testing.inbox.add(_received(server, envelope, tuple(self._transcript)))
        self._transcript.clear()


class TestingSMTP(SMTP):
    """The session of the test server: an :class:`SMTP` session with a
    :class:`TestingObserver`."""

    __test__ = False

    def __init__(self, handler: Any, *, testing: _State, **kwargs: Any) -> None:
        observer = TestingObserver(testing)
        super().__init__(handler, observer=observer, **kwargs)
        self.testing_observer = observer


class _Accept:
    """The handler of the test server: every message is accepted (the fault rules
    decide otherwise)."""

    def __init__(self, state: _State) -> None:
        self._state = state

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        web = self._state.web
        if web is not None:
            # Stored over HTTP before the 250 is written (awaited off the loop, in
            # the store's thread), so a client holding its 250 finds the message
            # there too.  The Python inbox files it later, as the 250 goes out: a
            # client gone in between leaves it over HTTP only.
            observer = getattr(server, "testing_observer", None)
            transcript = observer.transcript() if isinstance(observer, TestingObserver) else ()
            await web.keep(session, envelope, transcript)
        return "250 OK"


class _TestController(Controller):
    def __init__(self, state: _State, **kwargs: Any) -> None:
        super().__init__(_Accept(state), **kwargs)
        self._state = state

    def factory(self) -> SMTP:
        return TestingSMTP(self.handler, testing=self._state, **self.SMTP_kwargs)


class SMTPTestServer:
    """A test server on a free loopback port (or on ``port``, when given: for code
    that reads its SMTP settings once at start-up).

    ``tls``: ``"none"``, ``"starttls"`` (offered; ``require_starttls`` to insist) or
    ``"implicit"``.  ``auth``: True for one account (:data:`DEFAULT_USERNAME` /
    :data:`DEFAULT_PASSWORD`), or a mapping of user names to passwords.  With TLS, AUTH
    then needs TLS and is required before MAIL (``auth_required=False`` makes it
    optional); with ``tls="none"`` it is allowed in plaintext, and optional.
    Certificates made for the server alone are deleted when it stops.  Other
    keyword arguments go to
    :class:`~smtpwire.server.smtp.SMTP` (``modern`` defaults to True).

    ``web=True`` serves the inbox over HTTP as well, at :attr:`web_url` (a free
    port of ``host``): mailpit's API, smtpwire's own endpoints and the fault rules
    (see docs/inbox.md); it needs aiohttp (:class:`WebInboxUnavailable` otherwise).
    """

    __test__ = False

    def __init__(
        self,
        *,
        tls: TLSMode = "none",
        require_starttls: bool = False,
        auth: bool | Mapping[str, str] = False,
        host: str = "127.0.0.1",
        port: int = 0,
        certificates: TestCertificates | None = None,
        web: bool = False,
        **smtp_kwargs: Any,
    ) -> None:
        if web:
            _check_web_available()
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be 'none', 'starttls' or 'implicit', not {tls!r}")
        if require_starttls and tls != "starttls":
            raise ValueError("require_starttls needs tls='starttls'")
        self.tls: TLSMode = tls
        self.host = host
        self.inbox = Inbox()
        self.faults = FaultRules(implicit_tls=tls == "implicit")
        self.accounts: dict[str, str] = (
            dict(auth)
            if isinstance(auth, Mapping)
            else ({DEFAULT_USERNAME: DEFAULT_PASSWORD} if auth else {})
        )
        self.certificates = certificates
        self._own_certificates = tls != "none" and certificates is None
        if self._own_certificates:
            self.certificates = make_certificates()
        server_name = smtp_kwargs.pop("hostname", "smtpwire.test")
        kwargs: dict[str, Any] = {"modern": True, **smtp_kwargs}
        if self.accounts:
            kwargs.setdefault("authenticator", self._check_password)
            # Required before MAIL, as on a submission server; in plaintext it stays
            # optional (requiring AUTH without TLS is what aiosmtpd warns about).
            kwargs.setdefault("auth_required", tls != "none")
            kwargs.setdefault("auth_require_tls", tls != "none")
        if tls == "starttls":
            kwargs["tls_context"] = self._server_context()
            kwargs["require_starttls"] = require_starttls
        self.web = web
        self._state = _State(self.faults, self.inbox)
        self._controller = _TestController(
            self._state,
            hostname=host,
            port=port,
            ssl_context=self._server_context() if tls == "implicit" else None,
            server_hostname=server_name,
            **kwargs,
        )
        self._requested_port = port
        self._running = False

    # -- life cycle ---------------------------------------------------------------------

    def start(self, *, origin: str | None = None) -> SMTPTestServer:
        """Listen and serve.  ``origin`` says where the address was set, for the
        :class:`ListenError` raised when the server cannot listen there."""
        if self.web and self._state.web is None:
            from ._web import TestWebInbox  # noqa: PLC0415 - the inbox, only when asked for

            # The store first: a message accepted before HTTP is up is not missed.
            self._state.web = TestWebInbox(self.host, self.faults)
        try:
            self._controller.start()
        except OSError as error:
            self.stop()  # its own certificates and store, if any
            raise _listen_error(error, self.host, self._requested_port, origin) from error
        self._running = True
        if self._state.web is not None:
            try:
                self._state.web.serve(self._controller.loop)
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        web = self._state.web
        if self._running:
            self._running = False
            if web is not None:
                web.stop_serving()  # in the server's loop, which stops next
            self._controller.stop()
        if web is not None:
            self._state.web = None
            web.close()  # no session is left to add to it
        if self._own_certificates and self.certificates is not None:
            shutil.rmtree(self.certificates.directory, ignore_errors=True)
            self._own_certificates = False

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Empty the inbox (over HTTP too) and forget the fault rules (between two
        tests)."""
        self.inbox.clear()
        if self._state.web is not None:
            self._state.web.clear()
        self.faults.clear()

    # -- what a client needs --------------------------------------------------------------

    @property
    def port(self) -> int:
        port = self._controller.port
        assert isinstance(port, int)  # noqa: S101 - known once started
        return port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def username(self) -> str | None:
        return next(iter(self.accounts), None)

    @property
    def password(self) -> str | None:
        return None if self.username is None else self.accounts[self.username]

    @property
    def web_url(self) -> str:
        """The inbox over HTTP, ``http://127.0.0.1:PORT`` (``web=True``, started)."""
        url = None if self._state.web is None else self._state.web.url
        if url is None:
            raise RuntimeError(
                "this test server does not serve its inbox over HTTP: "
                "start it with web=True (the pytest plugin: smtpwire_web = true)"
            )
        return url

    def client_context(self) -> ssl.SSLContext:
        """An ``SSLContext`` that trusts this server's certificate (and checks it)."""
        if self.certificates is None:
            raise RuntimeError("this test server has no TLS (tls='none')")
        return self.certificates.client_context()

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``smtpwire.client.SMTP`` (or aiosmtplib's) that reach
        this server as it is set up: TLS mode, trusted context, credentials."""
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port}
        if self.tls == "implicit":
            kwargs.update(use_tls=True, tls_context=self.client_context())
        elif self.tls == "starttls":
            kwargs.update(start_tls=True, tls_context=self.client_context())
        else:
            kwargs.update(start_tls=False)
        if self.username is not None:
            kwargs.update(username=self.username, password=self.password)
        return kwargs

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self._running else "stopped"
        web = f" web={self._state.web.url}" if self._state.web and self._state.web.url else ""
        return f"<SMTPTestServer {where} tls={self.tls} auth={bool(self.accounts)}{web}>"

    # -- inside ------------------------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        assert self.certificates is not None  # noqa: S101 - made for every TLS mode
        return self.certificates.server_context()

    def _check_password(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if self.accounts.get(login) == password:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


def _listen_error(error: OSError, host: str, port: int, origin: str | None) -> ListenError:
    told = f" (set by {origin})" if origin else (f" (port={port})" if port else "")
    if error.errno == errno.EADDRINUSE:
        message = f"port {port} on {host} is already in use{told}"
    else:
        reason = os.strerror(error.errno) if error.errno else str(error)
        where = f"{host} port {port}" if port else host
        message = f"cannot listen on {where}{told}: {reason}"
    listen_error = ListenError(f"smtpwire test server: {message}")
    listen_error.errno = error.errno
    return listen_error


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")


def _addresses(server: SMTP, command: str, line: bytes) -> tuple[str, ...]:
    """What an address rule is compared with: the path of MAIL and RCPT; for the
    message (DATA, BDAT, its final reply) the sender and every recipient."""
    if command in ("MAIL", "RCPT"):
        return _path_in(command, line)
    if command in ("DATA", "BDAT", "MESSAGE"):
        return (server.envelope.mail_from or "", *server.envelope.rcpt_tos)
    return ()


def _received(server: SMTP, envelope: Envelope, transcript: tuple[str, ...]) -> ReceivedMessage:
    session = server.session
    ssl_object = (session.ssl or {}).get("ssl_object")
    login = session.login_data
    return ReceivedMessage(
        mail_from=envelope.mail_from or "",
        rcpt_tos=tuple(envelope.rcpt_tos),
        raw=envelope.original_content or b"",
        mail_options=tuple(envelope.mail_options),
        rcpt_options=tuple(envelope.rcpt_options),
        peer=session.peer,
        helo=session.host_name,
        tls=session.ssl is not None,
        tls_version=ssl_object.version() if ssl_object is not None else None,
        authenticated=bool(session.authenticated),
        auth_login=login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
        transcript=transcript,
    )


def _path_in(verb: str, line: bytes) -> tuple[str, ...]:
    """The address of a MAIL or RCPT line, as the wire core parses it (none when it
    does not parse: the server answers that line with its syntax error)."""
    argument = line.partition(b" ")[2].rstrip(b"\r").decode("utf-8", "surrogateescape")
    parse = parse_mail_from if verb == "MAIL" else parse_rcpt_to
    try:
        return (parse(argument, utf8=True).address,)
    except ProtocolError:
        return ()
