"""The observer seam (smtpwire.server.observe): what an observer is told and in which
order (command lines, replies as on the wire, accepted messages), credentials kept
out of it, and what each intervention does, seen from a client: a reply in place of
a command or of a message's reply, a delay, a drop before the reply or during the
message; and that an accepted message is reported in the loop step that writes its
250, before any later input is looked at."""

from __future__ import annotations

import asyncio
import base64
import logging
import smtplib
import time
from collections.abc import Sequence
from typing import Any

import pytest

from smtpwire.server.controller import Controller
from smtpwire.server.handlers import Sink
from smtpwire.server.lmtp import LMTP
from smtpwire.server.observe import Drop, Intervention, Observer
from smtpwire.server.session import AuthResult, Envelope
from smtpwire.server.smtp import SMTP
from smtpwire.server.streaming import MessageAborted
from support.engine_doubles import RecordingTransport
from support.server import WAIT, RawClient, Recorder, greeted, serving, text

HOST = "observed.test"
SENDER = "a@example.org"
RECIPIENT = "b@example.org"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n.\r\n"

Event = tuple[str, ...]


class Recording(Observer):
    """Notes every call in order; ``plan`` maps a command to the intervention it
    gets (once)."""

    def __init__(self, plan: dict[str, Intervention] | None = None) -> None:
        self.events: list[Event] = []
        self.plan = dict(plan or {})
        self.servers: set[int] = set()

    def command_received(self, server: SMTP, line: bytes) -> None:
        self.servers.add(id(server))
        self.events.append(("command", line.decode()))

    def reply_sent(self, server: SMTP, reply: bytes) -> None:
        self.servers.add(id(server))
        self.events.append(("reply", reply.decode()))

    def intercept(self, server: SMTP, command: str, line: bytes) -> Intervention | None:
        self.events.append(("intercept", command))
        return self.plan.pop(command, None)

    def message_accepted(self, server: SMTP, envelope: Envelope, replies: Sequence[str]) -> None:
        self.events.append(("accepted", envelope.mail_from or "", *envelope.rcpt_tos, *replies))
        assert server.envelope is not envelope  # the next transaction's already

    def of(self, kind: str) -> list[str]:
        return [event[1] for event in self.events if event[0] == kind]


def observed(observer: Observer, handler: Any = None, cls: type[SMTP] = SMTP, **kwargs: Any) -> Any:
    return lambda: cls(handler or Recorder(), hostname=HOST, observer=observer, **kwargs)


def start_message(client: RawClient, recipients: Sequence[str] = (RECIPIENT,)) -> None:
    assert client.command(f"MAIL FROM:<{SENDER}>").code == 250
    for recipient in recipients:
        assert client.command(f"RCPT TO:<{recipient}>").code == 250


# -- what the observer is told, in order --------------------------------------------------------


def test_a_session_is_observed_in_order() -> None:
    observer = Recording()
    with serving(observed(observer)) as server, greeted(server.port) as client:
        start_message(client)
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(MESSAGE)
        assert text(client.reply()) == "250 OK"
        assert text(client.command("QUIT")) == "221 Bye"
        assert client.closed_by_server()
    assert observer.events == [
        ("intercept", "CONNECT"),
        ("reply", f"220 {HOST} Python SMTP 1.4.6"),
        ("command", "EHLO client.example"),
        ("intercept", "EHLO"),
        ("reply", f"250-{HOST}"),
        ("reply", "250-SIZE 33554432"),
        ("reply", "250-8BITMIME"),
        ("reply", "250 HELP"),
        ("command", f"MAIL FROM:<{SENDER}>"),
        ("intercept", "MAIL"),
        ("reply", "250 OK"),
        ("command", f"RCPT TO:<{RECIPIENT}>"),
        ("intercept", "RCPT"),
        ("reply", "250 OK"),
        ("command", "DATA"),
        ("intercept", "DATA"),
        ("reply", GO_AHEAD),
        ("intercept", "MESSAGE"),
        ("reply", "250 OK"),
        ("accepted", SENDER, RECIPIENT, "250 OK"),
        ("command", "QUIT"),
        ("intercept", "QUIT"),
        ("reply", "221 Bye"),
    ]


def test_replies_are_reported_as_written_with_enhanced_codes() -> None:
    observer = Recording()
    with serving(observed(observer, modern=True)) as server, greeted(server.port) as client:
        got = [text(client.command(f"MAIL FROM:<{SENDER}>")), text(client.command("XYZZY"))]
        client.command("NOOP")  # the replies above are reported by now
    assert got[0].startswith("250 2.")
    assert observer.of("reply")[-3:-1] == got
    assert ("command", "XYZZY") in observer.events  # an unknown verb too
    assert ("intercept", "XYZZY") in observer.events


def test_a_line_too_long_is_not_reported_but_its_reply_is() -> None:
    observer = Recording()
    with serving(observed(observer)) as server, greeted(server.port) as client:
        reply = text(client.command("NOOP " + "x" * 2000))
        client.command("NOOP")
    assert reply.startswith("500 ")
    assert observer.of("command") == ["EHLO client.example", "NOOP"]
    assert reply in observer.of("reply")


def _accept_anyone(*args: Any) -> AuthResult:
    return AuthResult(success=True)


def test_credentials_never_reach_the_observer() -> None:
    observer = Recording()
    factory = observed(observer, Sink(), auth_require_tls=False, authenticator=_accept_anyone)
    plain = base64.b64encode(b"\0ann\0s3cret").decode()
    with serving(factory) as server:
        with greeted(server.port) as client:
            assert client.command(f"AUTH PLAIN {plain}").code == 235
        with greeted(server.port) as client:
            assert client.command("AUTH LOGIN").code == 334
            assert client.command(base64.b64encode(b"ann").decode()).code == 334
            assert client.command(base64.b64encode(b"s3cret").decode()).code == 235
            client.command("NOOP")
    commands = observer.of("command")
    assert "AUTH PLAIN ********" in commands
    assert "AUTH LOGIN" in commands
    told = [part for event in observer.events for part in event[1:]]
    secrets = (plain, "s3cret", base64.b64encode(b"s3cret").decode())
    assert not any(secret in part for part in told for secret in secrets)


def test_one_observer_serves_every_connection_of_a_controller() -> None:
    observer = Recording()
    controller = Controller(Sink(), hostname="127.0.0.1", port=0, observer=observer)
    controller.start()
    try:
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", controller.port, timeout=WAIT) as client:
                client.sendmail(SENDER, [RECIPIENT], "Subject: hi\r\n\r\nhello\r\n")
    finally:
        controller.stop()
    assert len(observer.servers) == 2
    assert len([event for event in observer.events if event[0] == "accepted"]) == 2


# -- interventions --------------------------------------------------------------------------------


class RcptNoter(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.recipients: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.recipients.append(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_reply_in_place_of_a_command() -> None:
    observer = Recording({"RCPT": Intervention(reply="550 5.1.1 No such user")})
    handler = RcptNoter()
    with serving(observed(observer, handler)) as server, greeted(server.port) as client:
        assert client.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert text(client.command(f"RCPT TO:<{RECIPIENT}>")) == "550 5.1.1 No such user"
        # Not carried out: no recipient, so DATA is out of sequence.
        assert text(client.command("DATA")) == "503 Error: need RCPT command"
    assert handler.recipients == []


def test_a_reply_in_place_of_the_greeting_closes_the_connection() -> None:
    observer = Recording({"CONNECT": Intervention(reply="421 4.3.2 Busy, try later")})
    with serving(observed(observer)) as server, RawClient(server.port) as client:
        assert text(client.reply()) == "421 4.3.2 Busy, try later"
        assert client.closed_by_server()


def test_a_reply_in_place_of_bdat_still_reads_its_chunk() -> None:
    observer = Recording({"BDAT": Intervention(reply="554 5.7.1 No chunks today")})
    factory = observed(observer, chunking=True)
    with serving(factory) as server, greeted(server.port) as client:
        start_message(client)
        client.send(b"BDAT 6 LAST\r\nQUIT\r\n")  # the chunk: six octets that look like QUIT
        assert text(client.reply()) == "554 5.7.1 No chunks today"
        assert text(client.command("NOOP")) == "250 OK"
    assert "QUIT" not in observer.of("command")


def test_a_delay() -> None:
    observer = Recording({"NOOP": Intervention(delay=0.3)})
    with serving(observed(observer)) as server, greeted(server.port) as client:
        started = time.monotonic()
        assert text(client.command("NOOP")) == "250 OK"  # then carried out
        took = time.monotonic() - started
    assert 0.27 <= took < WAIT


def test_a_drop_before_the_reply() -> None:
    observer = Recording({"MAIL": Intervention(drop=Drop.BEFORE_REPLY)})
    with serving(observed(observer)) as server, greeted(server.port) as client:
        client.send(f"MAIL FROM:<{SENDER}>\r\n".encode())
        assert client.closed_by_server()
    assert observer.events[-2:] == [("command", f"MAIL FROM:<{SENDER}>"), ("intercept", "MAIL")]


def test_a_drop_during_data() -> None:
    observer = Recording({"DATA": Intervention(drop=Drop.DURING_DATA)})
    handler = Recorder()
    with serving(observed(observer, handler)) as server, greeted(server.port) as client:
        start_message(client)
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(b"Subject: cut\r\n\r\npart of a message\r\n")
        assert client.closed_by_server()
    assert handler.messages == []


@pytest.mark.parametrize("cls", [SMTP, LMTP])
def test_a_reply_in_place_of_the_message_reply(cls: type[SMTP]) -> None:
    observer = Recording({"MESSAGE": Intervention(reply="451 4.3.0 Try again later")})
    handler = Recorder()
    greeting = "LHLO client.example" if cls is LMTP else "EHLO client.example"
    with (
        serving(observed(observer, handler, cls)) as server,
        greeted(server.port, greeting) as client,
    ):
        start_message(client, [RECIPIENT, "c@example.org"])
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(MESSAGE)
        replies = client.replies(2 if cls is LMTP else 1)  # LMTP: one per recipient
        assert {text(reply) for reply in replies} == {"451 4.3.0 Try again later"}
        assert text(client.command("NOOP")) == "250 OK"  # in step
    assert handler.messages == []
    assert "accepted" not in {event[0] for event in observer.events}


class Streamer:
    def __init__(self) -> None:
        self.aborted: list[str] = []

    async def handle_DATA_STREAM(self, server: Any, session: Any, envelope: Any, body: Any) -> str:
        try:
            async for _ in body:
                pass
        except MessageAborted as aborted:
            self.aborted.append(aborted.reason)
            raise
        return "250 streamed"


def test_a_streamed_message_refused_at_message_is_aborted() -> None:
    observer = Recording({"MESSAGE": Intervention(reply="554 5.7.1 Refused")})
    handler = Streamer()
    with serving(observed(observer, handler)) as server, greeted(server.port) as client:
        start_message(client)
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(MESSAGE)
        assert text(client.reply()) == "554 5.7.1 Refused"
        assert text(client.command("NOOP")) == "250 OK"
    assert len(handler.aborted) == 1


def test_a_drop_at_message() -> None:
    observer = Recording({"MESSAGE": Intervention(drop=Drop.BEFORE_REPLY)})
    handler = Recorder()
    with serving(observed(observer, handler)) as server, greeted(server.port) as client:
        start_message(client)
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(MESSAGE)
        assert client.closed_by_server()
    assert handler.messages == []
    assert observer.of("reply")[-1] == GO_AHEAD


# -- the accepted message: reported in the step that writes its 250 -------------------------------


class StepWatcher(Observer):
    """At message_accepted: notes how many writes there were and which commands were
    seen; at the loop's next step, what was written since."""

    def __init__(self, transport: RecordingTransport) -> None:
        self.transport = transport
        self.commands: list[str] = []
        self.at_call: tuple[int, list[str]] | None = None
        self.written_since: list[bytes] | None = None

    def command_received(self, server: SMTP, line: bytes) -> None:
        self.commands.append(line.decode())

    def message_accepted(self, server: SMTP, envelope: Envelope, replies: Sequence[str]) -> None:
        self.at_call = (len(self.transport.writes), list(self.commands))
        assert not self.transport.written.endswith(b"250 message OK\r\n")  # not yet
        asyncio.get_running_loop().call_soon(self._next_step)

    def _next_step(self) -> None:
        assert self.at_call is not None
        self.written_since = self.transport.writes[self.at_call[0] :]


class NoopHandler(Recorder):
    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        return "250 noop seen"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await super().handle_DATA(server, session, envelope)
        return "250 message OK"


async def test_the_accepted_message_is_reported_in_the_step_that_writes_its_250() -> None:
    transport = RecordingTransport()
    watcher = StepWatcher(transport)
    protocol = SMTP(NoopHandler(), hostname=HOST, observer=watcher)
    protocol.connection_made(transport)
    try:
        await asyncio.wait_for(transport.until_written(b"220 "), WAIT)
        # The whole session in one read: the NOOP after the message must not be
        # looked at before the message is reported and its 250 written.
        protocol.data_received(
            b"HELO client.example\r\n"
            + f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode()
            + MESSAGE
            + b"NOOP\r\n"
        )
        await asyncio.wait_for(transport.until_written(b"250 noop seen\r\n"), WAIT)
    finally:
        task = protocol._handler_coroutine
        protocol.connection_lost(None)
        if task is not None:
            await asyncio.wait_for(asyncio.wait({task}), WAIT)
    assert watcher.at_call is not None
    assert watcher.at_call[1] == [
        "HELO client.example", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>", "DATA",
    ]  # fmt: skip
    # Written before the next step, and before the NOOP was answered: its own write.
    assert watcher.written_since is not None
    assert watcher.written_since[0].endswith(b"250 message OK\r\n")
    assert b"noop" not in watcher.written_since[0]


# -- what an observer cannot break ----------------------------------------------------------------


class Broken(Observer):
    def command_received(self, server: SMTP, line: bytes) -> None:
        raise RuntimeError("command_received")

    def reply_sent(self, server: SMTP, reply: bytes) -> None:
        raise RuntimeError("reply_sent")

    def intercept(self, server: SMTP, command: str, line: bytes) -> Intervention | None:
        raise RuntimeError("intercept")

    def message_accepted(self, server: SMTP, envelope: Envelope, replies: Sequence[str]) -> None:
        raise RuntimeError("message_accepted")


def test_what_an_observer_raises_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    handler = Recorder()
    with (
        caplog.at_level(logging.ERROR, logger="mail.log"),
        serving(observed(Broken(), handler)) as server,
        greeted(server.port) as client,
    ):
        start_message(client)
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(MESSAGE)
        assert text(client.reply()) == "250 OK"
    assert len(handler.messages) == 1
    failed = {record.getMessage().rpartition("observer's ")[2] for record in caplog.records}
    assert {"command_received failed", "reply_sent failed", "intercept failed"} <= failed
    assert "message_accepted failed" in failed


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"delay": -1.0}, "negative"),
        ({"reply": "550 no", "drop": Drop.BEFORE_REPLY}, "either"),
        ({"reply": "250 two\r\nlines"}, "not a reply"),
        ({"reply": "hello"}, "not a reply"),
        ({"reply": "600 too high"}, "not a reply"),
    ],
)
def test_an_intervention_is_checked_when_made(arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Intervention(**arguments)
