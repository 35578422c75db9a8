"""Handler hooks with aiosmtpd 1.4.6's signatures and conventions: a present hook
gets (server, session, envelope, ...) and owns the state change, and its return
value is the reply."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smtpwire.server.smtp import SMTP, Envelope, Session
from support.server import RawClient, ServerThread, serving

HOST = "testhost"


def smtp(handler: Any, **kwargs: Any) -> Callable[[], SMTP]:
    kwargs.setdefault("hostname", HOST)
    return lambda: SMTP(handler, **kwargs)


@contextmanager
def serving_prebuilt(
    make: Callable[[ServerThread], SMTP],
) -> Iterator[ServerThread]:
    """Serve one connection with a protocol built in the test's thread, so that
    warnings its constructor emits can be checked with pytest.warns."""
    built: list[SMTP] = []
    with serving(built.pop) as server:
        built.append(make(server))
        yield server


def connect(port: int) -> RawClient:
    client = RawClient(port)
    assert client.reply().code == 220
    return client


def server_envelope(server: ServerThread) -> Envelope:
    envelope: Envelope = server.call(lambda: server.protocols[0].envelope)
    return envelope


# -- HELO / EHLO -------------------------------------------------------------------------------


class HeloHook:
    def __init__(self, *, set_host_name: bool = True) -> None:
        self.set_host_name = set_host_name
        self.calls: list[tuple[Any, ...]] = []

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        self.calls.append((server, session, envelope, hostname))
        if self.set_host_name:
            session.host_name = hostname
        return f"250 Hello {hostname}, I am {server.hostname}"


def test_handle_helo_reply_and_arguments() -> None:
    handler = HeloHook()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        assert str(client.command("HELO client.example")) == (
            "250 Hello client.example, I am testhost"
        )
        protocol = server.protocols[0]
        ((hook_server, session, envelope, hostname),) = handler.calls
        assert hook_server is protocol
        assert session is server.call(lambda: protocol.session)
        assert envelope is server_envelope(server)
        assert hostname == "client.example"
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"


def test_handle_helo_owns_host_name() -> None:
    with serving(smtp(HeloHook(set_host_name=False))) as server, connect(server.port) as client:
        assert client.command("HELO client.example").code == 250
        assert server.call(lambda: server.protocols[0].session.host_name) is None
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "503 Error: send HELO first"


class EhloHook:
    def __init__(self, *, set_host_name: bool = True) -> None:
        self.set_host_name = set_host_name
        self.seen: list[tuple[str, list[str]]] = []

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.seen.append((hostname, list(responses)))
        if self.set_host_name:
            session.host_name = hostname
        return [*responses[:-1], "250-X-CUSTOM extension", "250 HELP"]


def test_handle_ehlo_new_form_replaces_the_planned_lines() -> None:
    handler = EhloHook()
    with serving(smtp(handler, enable_SMTPUTF8=True)) as server, connect(server.port) as client:
        reply = client.command("EHLO client.example")
        assert reply.code == 250
        assert list(reply.lines) == [
            "testhost",
            "SIZE 33554432",
            "8BITMIME",
            "SMTPUTF8",
            "X-CUSTOM extension",
            "HELP",
        ]
        assert handler.seen == [
            (
                "client.example",
                ["250-testhost", "250-SIZE 33554432", "250-8BITMIME", "250-SMTPUTF8", "250 HELP"],
            )
        ]
        assert server.call(lambda: server.protocols[0].session.extended_smtp) is True
        assert str(client.command("MAIL FROM:<anne@example.com> SMTPUTF8")) == "250 OK"


def test_handle_ehlo_new_form_owns_host_name() -> None:
    with serving(smtp(EhloHook(set_host_name=False))) as server, connect(server.port) as client:
        assert client.command("EHLO client.example").code == 250
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "503 Error: send HELO first"


class OldEhloHook:
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        session.host_name = hostname
        return "250 OLD-STYLE"


def test_handle_ehlo_old_form_is_deprecated_and_ends_the_reply() -> None:
    def make(server: ServerThread) -> SMTP:
        with pytest.warns(DeprecationWarning, match="5-argument handle_EHLO"):
            return SMTP(OldEhloHook(), hostname=HOST, loop=server.loop)

    with serving_prebuilt(make) as server, connect(server.port) as client:
        reply = client.command("EHLO client.example")
        assert reply.code == 250
        assert list(reply.lines) == ["testhost", "SIZE 33554432", "8BITMIME", "OLD-STYLE"]
        assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"


class ThreeArgEhlo:
    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 HELP"


class SixArgEhlo:
    async def handle_EHLO(  # noqa: PLR0917 - one positional parameter too many, on purpose
        self, server: Any, session: Any, envelope: Any, hostname: Any, responses: Any, extra: Any
    ) -> str:
        return "250 HELP"


@pytest.mark.parametrize("handler_class", [ThreeArgEhlo, SixArgEhlo])
async def test_unsupported_ehlo_hook(handler_class: type) -> None:
    with pytest.raises(RuntimeError, match=r"^Unsupported EHLO Hook$"):
        SMTP(handler_class())


# -- MAIL / RCPT -------------------------------------------------------------------------------


class MailHook:
    def __init__(self, *, fill: bool) -> None:
        self.fill = fill
        self.calls: list[tuple[str, list[str]]] = []

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.calls.append((address, list(mail_options)))
        if self.fill:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return f"250 Sender {address} noted"


def test_handle_mail_owns_the_envelope() -> None:
    handler = MailHook(fill=False)
    with serving(smtp(handler)) as server, connect(server.port) as client:
        client.command("EHLO client.example")
        reply = client.command("MAIL FROM:<anne@example.com> size=10 body=8bitmime")
        assert str(reply) == "250 Sender anne@example.com noted"
        assert handler.calls == [("anne@example.com", ["SIZE=10", "BODY=8BITMIME"])]
        envelope = server_envelope(server)
        assert (envelope.mail_from, envelope.mail_options) == (None, [])
        assert str(client.command("RCPT TO:<bart@example.com>")) == "503 Error: need MAIL command"
        # The hook is not consulted for what the server refuses itself.
        assert str(client.command("MAIL FROM:<@example.com>")) == (
            "553 5.1.3 Error: malformed address"
        )
        assert str(client.command("MAIL FROM:<anne@example.com> FOO=BAR")) == (
            "555 MAIL FROM parameters not recognized or not implemented"
        )
        assert len(handler.calls) == 1


def test_handle_mail_that_fills_the_envelope() -> None:
    handler = MailHook(fill=True)
    with serving(smtp(handler)) as server, connect(server.port) as client:
        client.command("EHLO client.example")
        assert client.command("MAIL FROM:<anne@example.com> SIZE=10").code == 250
        envelope = server_envelope(server)
        assert (envelope.mail_from, envelope.mail_options) == ("anne@example.com", ["SIZE=10"])
        assert str(client.command("RCPT TO:<bart@example.com>")) == "250 OK"
        assert str(client.command("MAIL FROM:<carl@example.com>")) == (
            "503 Error: nested MAIL command"
        )


class RcptHook:
    def __init__(self, *, fill: bool) -> None:
        self.fill = fill
        self.calls: list[tuple[str, list[str]]] = []

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.calls.append((address, list(rcpt_options)))
        if self.fill:
            envelope.rcpt_tos.append(address)
            return "250 OK"
        return "550 5.1.1 Recipient address rejected: User unknown"


def test_handle_rcpt_owns_the_envelope() -> None:
    handler = RcptHook(fill=False)
    with serving(smtp(handler)) as server, connect(server.port) as client:
        client.command("HELO client.example")
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command("RCPT TO:<bart@example.com>")) == (
            "550 5.1.1 Recipient address rejected: User unknown"
        )
        assert handler.calls == [("bart@example.com", [])]
        assert server_envelope(server).rcpt_tos == []
        assert str(client.command("DATA")) == "503 Error: need RCPT command"


def test_handle_rcpt_that_fills_the_envelope() -> None:
    handler = RcptHook(fill=True)
    with serving(smtp(handler)) as server, connect(server.port) as client:
        client.command("HELO client.example")
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command("RCPT TO:<bart@example.com>")) == "250 OK"
        assert str(client.command("RCPT TO:<cate@example.com>")) == "250 OK"
        assert server_envelope(server).rcpt_tos == ["bart@example.com", "cate@example.com"]
        assert client.command("DATA").code == 354


# -- DATA --------------------------------------------------------------------------------------


class DataHook:
    def __init__(self) -> None:
        self.seen: list[tuple[Session, str | None, list[str], Any]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.seen.append((session, envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued as 4BKZ1"


def start_transaction(client: RawClient) -> None:
    client.command("HELO client.example")
    assert str(client.command("MAIL FROM:<anne@example.com>")) == "250 OK"
    assert str(client.command("RCPT TO:<bart@example.com>")) == "250 OK"
    assert client.command("DATA").code == 354


def send_transaction(client: RawClient, body: bytes = b"hello\r\n") -> None:
    start_transaction(client)
    client.send(body + b".\r\n")


def test_handle_data_return_value_is_the_reply() -> None:
    handler = DataHook()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        send_transaction(client)
        assert str(client.reply()) == "250 2.0.0 Ok: queued as 4BKZ1"
        ((session, mail_from, rcpt_tos, content),) = handler.seen
        assert session is server.call(lambda: server.protocols[0].session)
        assert (mail_from, rcpt_tos, content) == (
            "anne@example.com",
            ["bart@example.com"],
            b"hello\r\n",
        )


class LegacySync:
    def __init__(self, status: str | None) -> None:
        self.status = status
        self.calls: list[tuple[Any, ...]] = []

    def process_message(self, peer: Any, mail_from: str, rcpt_tos: list[str], data: Any) -> Any:
        self.calls.append((peer, mail_from, list(rcpt_tos), data))
        return self.status


class LegacyAsync(LegacySync):
    async def process_message(  # type: ignore[override]
        self, peer: Any, mail_from: str, rcpt_tos: list[str], data: Any
    ) -> Any:
        return super().process_message(peer, mail_from, rcpt_tos, data)


@pytest.mark.parametrize("handler_class", [LegacySync, LegacyAsync])
@pytest.mark.parametrize(
    ("status", "reply"), [(None, "250 OK"), ("250 legacy ok", "250 legacy ok")]
)
def test_legacy_process_message(handler_class: type, status: str | None, reply: str) -> None:
    handler = handler_class(status)
    with serving(smtp(handler, decode_data=True)) as server, connect(server.port) as client:
        start_transaction(client)
        with pytest.warns(DeprecationWarning, match=r"handle_DATA\(\)"):
            delivered = client.command(b"legacy\r\n.")
        assert str(delivered) == reply
        ((peer, mail_from, rcpt_tos, data),) = handler.calls
        assert peer == client.sock.getsockname()
        assert (mail_from, rcpt_tos, data) == (
            "anne@example.com",
            ["bart@example.com"],
            "legacy\r\n",
        )


class DataAndLegacy(DataHook, LegacySync):
    def __init__(self) -> None:
        DataHook.__init__(self)
        LegacySync.__init__(self, "250 legacy")


def test_handle_data_wins_over_process_message_without_warning() -> None:
    handler = DataAndLegacy()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        send_transaction(client)
        assert str(client.reply()) == "250 2.0.0 Ok: queued as 4BKZ1"
        assert handler.calls == []


# -- NOOP, RSET, QUIT, VRFY --------------------------------------------------------------------


class SimpleHooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str | None
    ) -> str:
        self.calls.append(("NOOP", arg))
        return "250 noop hook"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.calls.append(("RSET", envelope.mail_from))
        return "250 rset hook"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.calls.append(("QUIT", None))
        return "221 See you"

    async def handle_VRFY(
        self, server: SMTP, session: Session, envelope: Envelope, address: str
    ) -> str:
        self.calls.append(("VRFY", (address, envelope.mail_from)))
        return f"250 <{address}>"


def test_handle_noop_gets_the_argument() -> None:
    handler = SimpleHooks()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        assert str(client.command("NOOP")) == "250 noop hook"
        assert str(client.command("NOOP  hello there ")) == "250 noop hook"
        assert handler.calls == [("NOOP", None), ("NOOP", "hello there")]


def test_handle_rset_after_the_envelope_is_reset() -> None:
    handler = SimpleHooks()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        client.command("HELO client.example")
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command("RSET")) == "250 rset hook"
        assert handler.calls == [("RSET", None)]
        assert server_envelope(server).mail_from is None
        assert str(client.command("RSET now")) == "501 Syntax: RSET"
        assert len(handler.calls) == 1


def test_handle_quit_reply_then_close() -> None:
    handler = SimpleHooks()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        assert str(client.command("QUIT")) == "221 See you"
        assert client.closed_by_server()
        assert handler.calls == [("QUIT", None)]


def test_handle_vrfy_gets_the_parsed_address_and_current_envelope() -> None:
    handler = SimpleHooks()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        client.command("HELO client.example")
        client.command("MAIL FROM:<anne@example.com>")
        assert str(client.command("VRFY <zuzu@example.com>")) == "250 <zuzu@example.com>"
        assert str(client.command("VRFY @@")) == "502 Could not VRFY @@"
        assert handler.calls == [("VRFY", ("zuzu@example.com", "anne@example.com"))]


class SubclassHooks(SMTP):
    async def rset_hook(self) -> None:
        self.rset_hook_called = True


def test_deprecated_rset_hook_on_a_subclass() -> None:
    with (
        serving(lambda: SubclassHooks(object(), hostname=HOST)) as server,
        connect(server.port) as client,
    ):
        with pytest.warns(DeprecationWarning, match="handle_RSET"):
            assert str(client.command("RSET")) == "250 OK"
        assert server.call(lambda: server.protocols[0].rset_hook_called) is True


# -- exceptions --------------------------------------------------------------------------------


class Undescribable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no description")


class Failing:
    """handle_VRFY raises; handle_exception does what ``mode`` says."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.errors: list[Exception] = []

    async def handle_VRFY(
        self, server: SMTP, session: Session, envelope: Envelope, address: str
    ) -> str:
        raise ValueError("boom")

    async def handle_exception(self, error: Exception) -> Any:
        self.errors.append(error)
        if self.mode == "reply":
            return f"451 Temporary error: ({error.__class__.__name__}) {error}"
        if self.mode == "raise":
            raise ValueError("handler broke")
        if self.mode == "undescribable":
            raise Undescribable
        return None


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("reply", "451 Temporary error: (ValueError) boom"),
        ("raise", "500 Error: (ValueError) handler broke"),
        ("undescribable", "500 Error: Cannot describe error"),
    ],
)
def test_handle_exception(mode: str, expected: str) -> None:
    handler = Failing(mode)
    with serving(smtp(handler)) as server, connect(server.port) as client:
        assert str(client.command("VRFY anne@example.com")) == expected
        (error,) = handler.errors
        assert isinstance(error, ValueError)
        assert str(error) == "boom"
        assert str(client.command("NOOP")) == "250 OK"


def test_handle_exception_returning_none_gives_451_and_the_session_continues() -> None:
    handler = Failing("none")
    with serving(smtp(handler)) as server, connect(server.port) as client:
        assert str(client.command("VRFY anne@example.com")) == (
            "451 Requested action aborted: error in processing"
        )
        assert len(handler.errors) == 1
        assert str(client.command("NOOP")) == "250 OK"
        assert client.command("VRFY anne@example.com").code == 451
        assert str(client.command("QUIT")) == "221 Bye"


class FailingWithoutHandler:
    async def handle_VRFY(
        self, server: SMTP, session: Session, envelope: Envelope, address: str
    ) -> str:
        raise ValueError("boom")

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raise KeyError("spool")


def test_exception_without_handle_exception(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mail.log")
    with serving(smtp(FailingWithoutHandler())) as server, connect(server.port) as client:
        assert str(client.command("VRFY anne@example.com")) == "500 Error: (ValueError) boom"
        assert str(client.command("VRFY anne@example.com")) == "500 Error: (ValueError) boom"
        # The same connection keeps being served, transactions included.
        send_transaction(client)
        assert str(client.reply()) == "500 Error: (KeyError) 'spool'"
        assert str(client.command("NOOP")) == "250 OK"
    logged = [record for record in caplog.records if record.exc_info]
    assert [type(record.exc_info[1]) for record in logged if record.exc_info] == [
        ValueError,
        ValueError,
        KeyError,
    ]


def test_hooks_are_discovered_once_per_instance() -> None:
    handler = SimpleHooks()
    with serving(smtp(handler)) as server, connect(server.port) as client:
        handler.handle_HELO = HeloHook().handle_HELO  # type: ignore[attr-defined]
        assert str(client.command("HELO client.example")) == "250 testhost"
        assert str(client.command("NOOP")) == "250 noop hook"
