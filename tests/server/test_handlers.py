"""The ready-made handlers, driven by a real server over a real socket.

Each test starts a Controller on 127.0.0.1 port 0, sends mail with smtplib and
checks what the handler produced (the printed text, the Maildir, the queue,
the upstream server).
"""

from __future__ import annotations

import argparse
import asyncio
import email.message
import io
import logging
import mailbox
import queue
import smtplib
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from smtpwire.server.controller import Controller
from smtpwire.server.handlers import (
    AsyncMessage,
    Debugging,
    Mailbox,
    Message,
    MessageBase,
    Proxy,
    Queue,
    Sink,
)
from smtpwire.server.session import Envelope, Session

WAIT = 10.0  # the bound on every wait for another thread
NO_SERVER: Any = None  # for hooks called directly: the handlers never look at the server

MESSAGE = (
    b"From: Anne Person <anne@example.com>\r\n"
    b"To: Bart Person <bart@example.com>\r\n"
    b"Subject: A test\r\n"
    b"Message-ID: <ant>\r\n"
    b"\r\n"
    b"Hi Bart, this is Anne.\r\n"
)


@contextmanager
def serving(handler: Any, **smtp_parameters: Any) -> Iterator[Controller]:
    controller = Controller(handler, hostname="127.0.0.1", port=0, **smtp_parameters)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@contextmanager
def client(controller: Controller) -> Iterator[smtplib.SMTP]:
    with smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as smtp:
        yield smtp


def client_address(smtp: smtplib.SMTP) -> tuple[str, int]:
    assert smtp.sock is not None
    host, port = smtp.sock.getsockname()[:2]
    return host, port


def make_envelope(content: bytes | str, **fields: Any) -> Envelope:
    envelope = Envelope(
        mail_from="anne@example.com", rcpt_tos=["bart@example.com", "cate@example.com"]
    )
    envelope.content = content
    envelope.original_content = content.encode() if isinstance(content, str) else content
    for name, value in fields.items():
        setattr(envelope, name, value)
    return envelope


def make_session(peer: Any = ("192.0.2.1", 4567)) -> Session:
    session = Session(asyncio.get_running_loop())
    session.peer = peer
    return session


def cli_error(capsys: pytest.CaptureFixture[str], handler_class: Any, *args: str) -> str:
    parser = argparse.ArgumentParser(prog="smtpwire-server")
    with pytest.raises(SystemExit) as exit_info:
        handler_class.from_cli(parser, *args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# -- what the server sees as hooks --------------------------------------------------


@pytest.mark.parametrize(
    "handler_class", [Sink, Debugging, MessageBase, Message, AsyncMessage, Mailbox, Queue, Proxy]
)
def test_no_helper_looks_like_a_hook(handler_class: type) -> None:
    # The server registers every handle_* attribute as the hook of an SMTP verb.
    hooks = {name for name in dir(handler_class) if name.startswith("handle_")}
    assert hooks <= {"handle_DATA", "handle_message"}


def test_sink_has_no_hooks() -> None:
    assert not [name for name in dir(Sink) if name.startswith("handle_")]


# -- Sink ------------------------------------------------------------------------------


def test_sink_accepts_and_discards() -> None:
    with serving(Sink()) as controller, client(controller) as smtp:
        assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        assert smtp.noop() == (250, b"OK")


def test_sink_from_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(Sink.from_cli(argparse.ArgumentParser()), Sink)
    assert "error: Sink handler does not accept arguments" in cli_error(capsys, Sink, "x")


# -- Debugging -------------------------------------------------------------------------


def test_debugging_prints_each_message_in_aiosmtpd_layout() -> None:
    stream = io.StringIO()
    with serving(Debugging(stream)) as controller, client(controller) as smtp:
        smtp.sendmail(
            "anne@example.com",
            ["bart@example.com"],
            b"Subject: hi\r\nFrom: anne@example.com\r\n\r\nline 1\r\n\r\nline 3\r\n",
            mail_options=["BODY=8BITMIME"],
        )
        smtp.sendmail("anne@example.com", ["bart@example.com"], b"Subject: two\r\n\r\nbody\r\n")
        peer = client_address(smtp)
    size_one = len(b"Subject: hi\r\nFrom: anne@example.com\r\n\r\nline 1\r\n\r\nline 3\r\n")
    size_two = len(b"Subject: two\r\n\r\nbody\r\n")
    assert stream.getvalue() == (
        "---------- MESSAGE FOLLOWS ----------\n"
        f"mail options: ['SIZE={size_one}', 'BODY=8BITMIME']\n"
        "\n"
        "Subject: hi\n"
        "From: anne@example.com\n"
        f"X-Peer: {peer!r}\n"
        "\n"
        "line 1\n"
        "\n"
        "line 3\n"
        "------------ END MESSAGE ------------\n"
        "---------- MESSAGE FOLLOWS ----------\n"
        f"mail options: ['SIZE={size_two}']\n"
        "\n"
        "Subject: two\n"
        f"X-Peer: {peer!r}\n"
        "\n"
        "body\n"
        "------------ END MESSAGE ------------\n"
    )


def test_debugging_prints_decoded_content() -> None:
    stream = io.StringIO()
    content = "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode()
    with (
        serving(
            Debugging(stream), decode_data=True, enable_SMTPUTF8=True, data_size_limit=0
        ) as controller,
        client(controller) as smtp,
    ):
        smtp.sendmail("anne@example.com", ["bart@example.com"], content, ["SMTPUTF8"])
        peer = client_address(smtp)
    assert stream.getvalue() == (
        "---------- MESSAGE FOLLOWS ----------\n"
        "mail options: ['SMTPUTF8']\n"
        "\n"
        "Subject: caf\u00e9\n"
        f"X-Peer: {peer!r}\n"
        "\n"
        "na\u00efve\n"
        "------------ END MESSAGE ------------\n"
    )


@pytest.mark.parametrize(
    ("content", "expected_lines"),
    [
        # No mail options: no options line; bytes that are not UTF-8 are replaced.
        (b"Subject: \xff\r\n\r\nb\xfe\r\n", ["Subject: \ufffd", "PEER", "", "b\ufffd"]),
        # Bytes are split on CR, LF and CRLF only, then decoded (C2 85 is not a break).
        (b"A: b\xc2\x85c\rD: e\n\nf", ["A: b\x85c", "D: e", "PEER", "", "f"]),
        # str content is split as str.splitlines does.
        ("A: b\x0bc\r\n\r\nd\u2028e", ["A: b", "c", "PEER", "", "d", "e"]),
        # Body only.
        (b"\r\nbody\r\n", ["PEER", "", "body"]),
        # Headers only: the peer still shows, after them (aiosmtpd left it out).
        (b"Subject: x\r\nTo: y\r\n", ["Subject: x", "To: y", "PEER"]),
        (b"", ["PEER"]),
    ],
)
async def test_debugging_layout(content: bytes | str, expected_lines: list[str]) -> None:
    stream = io.StringIO()
    session = make_session()
    status = await Debugging(stream).handle_DATA(NO_SERVER, session, make_envelope(content))
    assert status == "250 OK"
    peer_line = "X-Peer: ('192.0.2.1', 4567)"
    lines = [peer_line if line == "PEER" else line for line in expected_lines]
    assert stream.getvalue() == "\n".join(
        [
            "---------- MESSAGE FOLLOWS ----------",
            *lines,
            "------------ END MESSAGE ------------",
            "",
        ]
    )


async def test_debugging_shows_a_unix_socket_peer_as_repr() -> None:
    stream = io.StringIO()
    envelope = make_envelope(b"A: b\r\n\r\nc\r\n")
    await Debugging(stream).handle_DATA(NO_SERVER, make_session("/run/smtp.sock"), envelope)
    assert "X-Peer: '/run/smtp.sock'\n" in stream.getvalue()


def test_debugging_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert Debugging().stream is sys.stdout
    parser = argparse.ArgumentParser()
    assert Debugging.from_cli(parser).stream is sys.stdout
    assert Debugging.from_cli(parser, "stdout").stream is sys.stdout
    assert Debugging.from_cli(parser, "stderr").stream is sys.stderr
    for args in (("stdin",), ("stdout", "stderr")):
        assert "error: Debugging usage: [stdout|stderr]" in cli_error(capsys, Debugging, *args)


# -- MessageBase / Message / AsyncMessage ---------------------------------------------


class RecordingMessage(Message):
    def __init__(self, message_class: type[email.message.Message] | None = None) -> None:
        super().__init__(message_class)
        self.messages: list[email.message.Message] = []

    def handle_message(self, message: email.message.Message) -> None:
        self.messages.append(message)


class Marked(email.message.Message):
    pass


async def test_prepare_message_records_the_envelope() -> None:
    handler = RecordingMessage()
    for content in (MESSAGE, MESSAGE.decode()):
        message = handler.prepare_message(make_session(), make_envelope(content))
        assert type(message) is email.message.Message
        assert message["Subject"] == "A test"
        assert message["X-Peer"] == "('192.0.2.1', 4567)"
        assert message["X-MailFrom"] == "anne@example.com"
        assert message["X-RcptTo"] == "bart@example.com, cate@example.com"
        assert message.get_payload() == "Hi Bart, this is Anne.\r\n"


async def test_prepare_message_appends_after_the_clients_own_headers() -> None:
    # As in aiosmtpd; the header this server added is the last one.
    content = b"X-Peer: forged\r\nSubject: s\r\n\r\nbody\r\n"
    message = MessageBase().prepare_message(make_session(), make_envelope(content))
    assert message.get_all("X-Peer") == ["forged", "('192.0.2.1', 4567)"]


async def test_prepare_message_uses_the_message_class() -> None:
    message = MessageBase(Marked).prepare_message(make_session(), make_envelope(MESSAGE))
    assert type(message) is Marked


async def test_prepare_message_refuses_other_content() -> None:
    envelope = make_envelope(MESSAGE)
    for content, name in ((None, "NoneType"), (42, "int")):
        envelope.content = content  # type: ignore[assignment]
        with pytest.raises(TypeError, match=rf"^Expected str or bytes, got <class '{name}'>$"):
            MessageBase().prepare_message(make_session(), envelope)


def test_message_and_async_message_are_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Message()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="abstract"):
        AsyncMessage()  # type: ignore[abstract]


def test_message_handler_gets_parsed_messages() -> None:
    handler = RecordingMessage(Marked)
    with serving(handler) as controller, client(controller) as smtp:
        smtp.sendmail("anne@example.com", ["bart@example.com", "cate@example.com"], MESSAGE)
        peer = client_address(smtp)
    [message] = handler.messages
    assert type(message) is Marked
    assert message["Message-ID"] == "<ant>"
    assert message["X-Peer"] == str(peer)
    assert message["X-MailFrom"] == "anne@example.com"
    assert message["X-RcptTo"] == "bart@example.com, cate@example.com"


class RecordingAsyncMessage(AsyncMessage):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages: list[tuple[email.message.Message, asyncio.AbstractEventLoop]] = []

    async def handle_message(self, message: email.message.Message) -> None:
        await asyncio.sleep(0)  # a real coroutine, suspended once
        self.messages.append((message, self.loop))


def test_async_message_handler_runs_in_the_serving_loop() -> None:
    handler = RecordingAsyncMessage()
    with serving(handler) as controller, client(controller) as smtp:
        smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
        serving_loop = controller.loop
    [(message, loop)] = handler.messages
    assert message["Subject"] == "A test"
    assert message["X-RcptTo"] == "bart@example.com"
    assert loop is serving_loop


def test_async_message_keeps_a_given_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert RecordingAsyncMessage(loop=loop).loop is loop
    finally:
        loop.close()


# -- Mailbox ---------------------------------------------------------------------------


def test_mailbox_delivers_into_a_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    handler = Mailbox(maildir)
    with serving(handler) as controller, client(controller) as smtp:
        smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
        smtp.sendmail(
            "cate@example.com",
            ["dave@example.com"],
            MESSAGE.replace(b"<ant>", b"<bee>"),
        )
    messages = sorted(mailbox.Maildir(maildir), key=lambda message: str(message["Message-ID"]))
    assert [(m["Message-ID"], m["X-MailFrom"], m["X-RcptTo"]) for m in messages] == [
        ("<ant>", "anne@example.com", "bart@example.com"),
        ("<bee>", "cate@example.com", "dave@example.com"),
    ]
    handler.reset()
    assert len(mailbox.Maildir(maildir)) == 0


def test_mailbox_from_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handler = Mailbox.from_cli(argparse.ArgumentParser(), str(tmp_path / "box"))
    assert isinstance(handler, Mailbox)
    assert (tmp_path / "box" / "new").is_dir()
    assert "error: The directory for the maildir is required" in cli_error(capsys, Mailbox)
    assert "error: Too many arguments for Mailbox handler" in cli_error(
        capsys, Mailbox, str(tmp_path / "a"), str(tmp_path / "b")
    )


# -- Queue -----------------------------------------------------------------------------


def test_queue_receives_each_message_in_order() -> None:
    handler = Queue()
    assert isinstance(handler.queue, queue.Queue)
    with serving(handler) as controller, client(controller) as smtp:
        for number in range(3):
            smtp.sendmail(
                "anne@example.com",
                ["bart@example.com"],
                MESSAGE.replace(b"<ant>", f"<{number}>".encode()),
            )
        peer = client_address(smtp)
    messages = [handler.queue.get(timeout=WAIT) for _ in range(3)]
    assert [message["Message-ID"] for message in messages] == ["<0>", "<1>", "<2>"]
    assert all(isinstance(message, email.message.Message) for message in messages)
    assert messages[0]["X-Peer"] == str(peer)
    assert messages[0]["X-MailFrom"] == "anne@example.com"
    assert messages[0]["X-RcptTo"] == "bart@example.com"
    assert handler.queue.empty()


def test_queue_full_defers_without_blocking() -> None:
    handler = Queue(queue.Queue(maxsize=1))
    with serving(handler) as controller, client(controller) as smtp:
        smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE)
        assert refused.value.smtp_code == 452
        # The loop is still serving: the same session goes on.
        assert smtp.noop() == (250, b"OK")
    assert handler.queue.get_nowait()["Message-ID"] == "<ant>"
    assert handler.queue.empty()


# -- Proxy -----------------------------------------------------------------------------


class Upstream(Queue):
    """The server the Proxy relays to: queues what it receives, with the envelope,
    and refuses recipients whose local part starts with "refuse"."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: queue.Queue[tuple[str | None, list[str], bytes | None]] = queue.Queue()

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("refuse"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        received = (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        self.envelopes.put(received)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, int]]:
    handler = Upstream()
    with serving(handler) as controller:
        yield handler, controller.port


def test_proxy_relays_with_the_client_address(upstream: tuple[Upstream, int]) -> None:
    handler, port = upstream
    with serving(Proxy("127.0.0.1", port)) as front, client(front) as smtp:
        assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
    mail_from, rcpt_tos, content = handler.envelopes.get(timeout=WAIT)
    assert (mail_from, rcpt_tos) == ("anne@example.com", ["bart@example.com"])
    headers, _, body = MESSAGE.partition(b"\r\n\r\n")
    assert content == headers + b"\r\nX-Peer: 127.0.0.1\r\n\r\n" + body
    message = handler.queue.get(timeout=WAIT)
    # The Proxy's header, then the upstream's own (the Proxy's connection to it).
    proxy_peer, upstream_peer = message.get_all("X-Peer", [])
    assert proxy_peer == "127.0.0.1"
    assert upstream_peer.startswith("('127.0.0.1', ")
    assert message["Subject"] == "A test"


def test_proxy_logs_refused_recipients(
    upstream: tuple[Upstream, int], caplog: pytest.LogCaptureFixture
) -> None:
    handler, port = upstream
    caplog.set_level(logging.INFO, logger="mail.debug")
    with serving(Proxy("127.0.0.1", port)) as front, client(front) as smtp:
        # The client cannot know: as in aiosmtpd it gets 250 for the message.
        assert (
            smtp.sendmail("anne@example.com", ["bart@example.com", "refused@example.com"], MESSAGE)
            == {}
        )
    assert handler.envelopes.get(timeout=WAIT)[1] == ["bart@example.com"]
    refusals = [r.getMessage() for r in caplog.records if r.name == "mail.debug"]
    assert any("refused@example.com" in text and "550" in text for text in refusals), refusals


def test_proxy_passes_on_the_upstream_refusal_and_final_reply(
    upstream: tuple[Upstream, int],
) -> None:
    """The sender sees what the upstream said: its refusal when it took no
    recipient (nothing relayed), and its own final reply text otherwise."""
    handler, port = upstream
    with serving(Proxy("127.0.0.1", port)) as front, client(front) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("anne@example.com", ["refused@example.com"], MESSAGE)
        assert refused.value.smtp_code == 550
        assert smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        assert smtp.noop()[0] == 250
    assert handler.envelopes.get(timeout=WAIT)[1] == ["bart@example.com"]
    assert handler.envelopes.empty()


async def test_proxy_normalises_line_endings_and_inserts_the_peer(
    upstream: tuple[Upstream, int],
) -> None:
    handler, port = upstream
    proxy = Proxy("127.0.0.1", port)
    cases = [
        (
            b"A: b\nC: d\n\nbody\n.\nafter\r",
            b"A: b\r\nC: d\r\nX-Peer: 192.0.2.1\r\n\r\nbody\r\n.\r\nafter\r\n",
        ),
        (b"\r\nbody only\r\n", b"X-Peer: 192.0.2.1\r\n\r\nbody only\r\n"),
        # No blank line: the header goes first.
        (b"Subject: x\r\n", b"X-Peer: 192.0.2.1\r\nSubject: x\r\n"),
    ]
    for content, relayed in cases:
        envelope = make_envelope(content, rcpt_tos=["bart@example.com"])
        status = await proxy.handle_DATA(NO_SERVER, make_session(), envelope)
        assert status == "250 OK"
        _, _, received = await asyncio.to_thread(handler.envelopes.get, timeout=WAIT)
        assert received == relayed


async def test_proxy_relays_the_received_bytes_of_decoded_content(
    upstream: tuple[Upstream, int],
) -> None:
    handler, port = upstream
    envelope = make_envelope(b"Subject: caf\xc3\xa9\r\n\r\nx\r\n", rcpt_tos=["bart@example.com"])
    envelope.content = "ignored: the bytes as received are relayed"
    await Proxy("127.0.0.1", port).handle_DATA(NO_SERVER, make_session(), envelope)
    _, _, received = await asyncio.to_thread(handler.envelopes.get, timeout=WAIT)
    assert received == b"Subject: caf\xc3\xa9\r\nX-Peer: 192.0.2.1\r\n\r\nx\r\n"


async def test_proxy_relays_bytearray_content_a_hook_left(
    upstream: tuple[Upstream, int],
) -> None:
    # As aiosmtpd: content that is not str is what gets relayed, bytearray included.
    handler, port = upstream
    envelope = make_envelope(b"Subject: as received\r\n\r\nx\r\n", rcpt_tos=["bart@example.com"])
    envelope.content = bytearray(b"Subject: rewritten\r\n\r\ny\r\n")  # type: ignore[assignment]
    await Proxy("127.0.0.1", port).handle_DATA(NO_SERVER, make_session(), envelope)
    _, _, received = await asyncio.to_thread(handler.envelopes.get, timeout=WAIT)
    assert received == b"Subject: rewritten\r\nX-Peer: 192.0.2.1\r\n\r\ny\r\n"


async def test_proxy_defers_and_logs_when_the_upstream_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing lost: the client is told to try again (aiosmtpd said 250 and dropped it)."""
    # Bound but not listening: connecting is refused, and no other test can take the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        proxy = Proxy("127.0.0.1", closed.getsockname()[1])
        with caplog.at_level(logging.INFO, logger="mail.debug"):
            status = await proxy.handle_DATA(NO_SERVER, make_session(), make_envelope(MESSAGE))
    assert status == "451 4.4.0 Error: relaying to the upstream server failed, try again later"
    texts = [record.getMessage() for record in caplog.records if record.name == "mail.debug"]
    assert any("relaying to 127.0.0.1" in text for text in texts), texts
    assert any("bart@example.com" in text and "-1" in text for text in texts), texts


class SlowUpstream:
    """Holds each DATA until released, without blocking its own loop."""

    def __init__(self) -> None:
        self.in_data = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.in_data.set()
        await asyncio.to_thread(self.release.wait, WAIT)
        return "250 OK"


def test_proxy_never_blocks_the_event_loop() -> None:
    slow = SlowUpstream()
    with serving(slow) as upstream, serving(Proxy("127.0.0.1", upstream.port)) as front:
        results: queue.Queue[object] = queue.Queue()

        def send() -> None:
            try:
                with client(front) as smtp:
                    results.put(smtp.sendmail("anne@example.com", ["bart@example.com"], MESSAGE))
            except Exception as error:  # handed to the test thread
                results.put(error)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            assert slow.in_data.wait(WAIT), "the relay never reached the upstream"
            # The relay is in flight: the front server must still serve others.
            with client(front) as other:
                assert other.noop() == (250, b"OK")
        finally:
            slow.release.set()
            sender.join(WAIT)
        assert not sender.is_alive()
        assert results.get_nowait() == {}
