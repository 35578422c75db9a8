"""The session's code runs in runner tasks (``Connection._handler_coroutine``): one
greets, and the read callback starts another when a command arrives while none
is at work (eagerly on Python 3.12+).  Every command, hook and override runs in a
task; a message read across several reads stays in one command, and nothing is
lost or reordered when a runner ends and the next starts."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from smtpwire.server.handlers import Sink
from smtpwire.server.smtp import SMTP, Envelope, Session
from support.engine_doubles import RecordingTransport
from support.server import WAIT, RawClient, ServerThread, read_until_eof, serving, text

HOST = "inline.example"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


def in_a_task() -> bool:
    return asyncio.current_task() is not None


class WhereCommandsRun(SMTP):
    """Records, per verb, whether its dispatch started in a task."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, **kwargs)
        self.started_in_task: list[tuple[str, bool]] = []

    async def _dispatch(self, line: Any, call_limit: Any) -> None:
        verb = bytes(line[:4]).decode("ascii", "replace").upper()
        self.started_in_task.append((verb, in_a_task()))
        await super()._dispatch(line, call_limit)


class HooksThatNeedATask:
    """Every hook checks that it runs in a task and uses asyncio.wait_for, which
    needs one on Python 3.12 and later."""

    def __init__(self) -> None:
        self.ran_in_task: dict[str, bool] = {}
        self.contents: list[bytes] = []

    async def _check(self, name: str) -> None:
        self.ran_in_task[name] = in_a_task()
        await asyncio.wait_for(asyncio.sleep(0), WAIT)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        await self._check("EHLO")
        session.host_name = hostname
        return lines

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        await self._check("NOOP")
        return "250 noop seen"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._check("MAIL")
        envelope.mail_from = address
        return "250 sender ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._check("RCPT")
        envelope.rcpt_tos.append(address)
        return "250 recipient ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._check("DATA")
        self.contents.append(envelope.original_content or b"")
        return "250 kept"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._check("RSET")
        return "250 reset"


def transaction(client: RawClient) -> list[str]:
    replies = [
        text(client.command(line))
        for line in ("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA")
    ]
    client.send(MESSAGE + b".\r\n")
    replies.append(text(client.reply()))
    return replies


def test_the_servers_own_commands_run_in_a_task() -> None:
    with serving(lambda: WhereCommandsRun(Sink())) as server, RawClient(server.port) as client:
        assert text(client.reply()).startswith("220 ")
        assert client.command("EHLO c.example").code == 250
        assert transaction(client) == ["250 OK", "250 OK", GO_AHEAD, "250 OK"]
        assert text(client.command("NOOP")) == "250 OK"
        assert text(client.command("RSET")) == "250 OK"
        assert text(client.command("QUIT")) == "221 Bye"
        assert read_until_eof(client.sock) == b""
        started = server.call(lambda: list(server.protocols[0].started_in_task))
    assert started == [
        (verb, True) for verb in ("EHLO", "MAIL", "RCPT", "DATA", "NOOP", "RSET", "QUIT")
    ]


@pytest.mark.parametrize("pipelined", [False, True])
def test_handler_hooks_always_run_in_the_session_task(pipelined: bool) -> None:
    handler = HooksThatNeedATask()
    with serving(lambda: WhereCommandsRun(handler)) as server, RawClient(server.port) as client:
        assert text(client.reply()).startswith("220 ")
        if pipelined:
            client.send(
                b"EHLO c.example\r\nNOOP\r\nMAIL FROM:<a@example.com>\r\n"
                b"RCPT TO:<b@example.com>\r\nDATA\r\n" + MESSAGE + b".\r\nRSET\r\nQUIT\r\n"
            )
            ehlo, *rest = client.replies(8)
            assert ehlo.code == 250
            assert [text(reply) for reply in rest] == [
                "250 noop seen", "250 sender ok", "250 recipient ok", GO_AHEAD,
                "250 kept", "250 reset", "221 Bye",
            ]  # fmt: skip
        else:
            assert client.command("EHLO c.example").code == 250
            assert text(client.command("NOOP")) == "250 noop seen"
            assert transaction(client) == [
                "250 sender ok",
                "250 recipient ok",
                GO_AHEAD,
                "250 kept",
            ]
            assert text(client.command("RSET")) == "250 reset"
            assert text(client.command("QUIT")) == "221 Bye"
        assert read_until_eof(client.sock) == b""
    assert handler.ran_in_task == dict.fromkeys(
        ("EHLO", "NOOP", "MAIL", "RCPT", "DATA", "RSET"), True
    )
    assert handler.contents == [MESSAGE]


class WithOwnCommands(WhereCommandsRun):
    """A subclass's commands (new, or overriding the server's) run in the task."""

    def __init__(self, handler: Any) -> None:
        super().__init__(handler)
        self.ran_in_task: dict[str, bool] = {}

    async def smtp_XPING(self, arg: str | None) -> None:
        self.ran_in_task["XPING"] = in_a_task()
        await asyncio.wait_for(asyncio.sleep(0), WAIT)
        await self.push("250 pong")

    async def smtp_NOOP(self, arg: str | None) -> None:
        self.ran_in_task["NOOP"] = in_a_task()
        await super().smtp_NOOP(arg)


def test_a_subclass_command_runs_in_the_session_task() -> None:
    with serving(lambda: WithOwnCommands(Sink())) as server, RawClient(server.port) as client:
        assert text(client.reply()).startswith("220 ")
        client.send(b"XPING\r\nNOOP\r\nRSET\r\n")
        assert [text(reply) for reply in client.replies(3)] == ["250 pong", "250 OK", "250 OK"]
        ran = server.call(lambda: dict(server.protocols[0].ran_in_task))
    assert ran == {"XPING": True, "NOOP": True}


class FailsInMail(SMTP):
    async def smtp_MAIL(self, arg: str | None) -> None:
        raise RuntimeError("broken on purpose")


class ExceptionHook:
    def __init__(self) -> None:
        self.ran_in_task: list[bool] = []

    async def handle_exception(self, error: Exception) -> str:
        self.ran_in_task.append(in_a_task())
        return f"451 4.3.0 handled {error}"


@pytest.mark.parametrize("with_hook", [False, True])
def test_a_failure_in_a_command_started_in_the_callback_becomes_a_reply(with_hook: bool) -> None:
    handler: Any = ExceptionHook() if with_hook else Sink()
    with (
        serving(lambda: FailsInMail(handler, hostname=HOST)) as server,
        RawClient(server.port) as client,
    ):
        assert text(client.reply()).startswith("220 ")
        assert text(client.command("HELO c.example")) == f"250 {HOST}"
        # Pipelined: the commands after the failing one are still answered, in order.
        client.send(b"MAIL FROM:<a@example.com>\r\nNOOP\r\nQUIT\r\n")
        replies = [text(reply) for reply in client.replies(3)]
    expected = (
        "451 4.3.0 handled broken on purpose"
        if with_hook
        else "500 Error: (RuntimeError) broken on purpose"
    )
    assert replies == [expected, "250 OK", "221 Bye"]
    if with_hook:
        assert handler.ran_in_task == [True]


class Watched(SMTP):
    """Keeps the handler's deliveries; a message is never delivered half.  Its
    DATA messages are received by the read callback, with no runner."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, **kwargs)


class WatchedByARunner(Watched):
    """The same, with a runner waiting for the message's octets (an override of
    _dispatch sends every command to a runner)."""

    async def _dispatch(self, line: Any, call_limit: Any) -> None:
        await super()._dispatch(line, call_limit)


@pytest.fixture(params=[Watched, WatchedByARunner], ids=["read callback", "runner"])
def watched(request: pytest.FixtureRequest) -> type[Watched]:
    kind: type[Watched] = request.param
    return kind


def receiving_a_message(protocol: Watched) -> bool:
    """Whether the session is inside a DATA message: a runner waits for its
    octets, or the read callback receives it."""
    if isinstance(protocol, WatchedByARunner):
        return protocol._input_waiter is not None
    return protocol._message_in_callback is not None and not protocol._runner_at_work


class Keeper:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.contents.append(envelope.original_content or b"")
        return "250 kept"


def start_message(server: ServerThread) -> RawClient:
    client = RawClient(server.port)
    assert text(client.reply()).startswith("220 ")
    assert text(client.command("HELO c.example")) == f"250 {HOST}"
    assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
    assert text(client.command("RCPT TO:<b@example.com>")) == "250 OK"
    assert text(client.command("DATA")) == GO_AHEAD
    client.send(b"Subject: half\r\n\r\nonly the first lines")
    return client


def sessions_ended(server: ServerThread) -> list[str]:
    async def outcome() -> list[str]:
        tasks = [p._handler_coroutine for p in server.protocols]
        _, pending = await asyncio.wait(tasks, timeout=WAIT)
        assert not pending, "a session task is still running"
        assert all(p._input_waiter is None for p in server.protocols)
        return [repr(t.exception()) for t in tasks if not t.cancelled() and t.exception()]

    result: list[str] = asyncio.run_coroutine_threadsafe(outcome(), server.loop).result(WAIT + 1)
    return result


def test_end_of_input_in_a_message_read_across_reads_delivers_nothing(
    watched: type[Watched],
) -> None:
    handler = Keeper()
    with serving(lambda: watched(handler)) as server:
        client = start_message(server)
        client.sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(client.sock) == b""
        client.close()
        assert sessions_ended(server) == []
    assert handler.contents == []


def test_idle_timeout_in_a_message_read_across_reads(watched: type[Watched]) -> None:
    handler = Keeper()
    with serving(lambda: watched(handler, timeout=0.3)) as server:
        client = start_message(server)
        # Nothing more is sent: the idle timer, not input, ends the message.
        assert (
            read_until_eof(client.sock) == f"421 4.4.2 {HOST} Error: timeout exceeded\r\n".encode()
        )
        client.close()
        assert sessions_ended(server) == []
    assert handler.contents == []


def test_stopping_the_server_in_a_message_read_across_reads_closes_it(
    watched: type[Watched],
) -> None:
    handler = Keeper()
    server = ServerThread(lambda: watched(handler))
    server.start()
    try:
        client = start_message(server)
        assert server.call(lambda: receiving_a_message(server.protocols[0]))
    finally:
        server.stop()  # aborts the connection and cancels the session task
    client.close()
    protocol = server.protocols[0]
    assert protocol._input_waiter is None
    assert protocol._handler_coroutine.done()
    assert handler.contents == []


def test_a_message_read_across_reads_then_a_hook(watched: type[Watched]) -> None:
    handler = Keeper()
    with serving(lambda: watched(handler)) as server:
        client = start_message(server)
        client.send(b"\r\nthe rest\r\n.\r\nNOOP\r\n")
        assert [text(reply) for reply in client.replies(2)] == ["250 kept", "250 OK"]
        assert text(client.command("QUIT")) == "221 Bye"
        client.close()
        assert sessions_ended(server) == []
    assert handler.contents == [b"Subject: half\r\n\r\nonly the first lines\r\nthe rest\r\n"]


class EndsOnClose(RecordingTransport):
    """Like asyncio's SSL transport: close() processes a close_notify already read and
    calls the protocol's eof_received() synchronously, from inside the runner's step."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None

    def close(self) -> None:
        super().close()
        if isinstance(self.protocol, asyncio.Protocol):
            self.protocol.eof_received()


async def test_end_of_input_during_a_runners_first_step_starts_no_second_runner() -> None:
    """Regression: on Python 3.12+ a runner starts eagerly, inside data_received.  A
    QUIT closing the transport in that first step made eof_received start another
    runner in the same context while it was entered ("cannot enter context")."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    transport = EndsOnClose()
    protocol = SMTP(Sink(), hostname=HOST)
    transport.protocol = protocol
    protocol.connection_made(transport)
    await asyncio.wait_for(transport.until(lambda: b"220 " in transport.written), WAIT)
    protocol.data_received(b"QUIT\r\n")
    await asyncio.wait_for(transport.until(lambda: b"221 Bye" in transport.written), WAIT)
    for _ in range(3):
        await asyncio.sleep(0)  # let any wrongly started runner fail
    protocol.connection_lost(None)
    assert errors == []
    assert transport.close_calls == 1


# -- commands answered in the read callback ---------------------------------------------------


class CountsRunners(SMTP):
    """Counts the runner tasks started after the greeting's."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, **kwargs)
        self.runners = 0

    def _spawn(self, coroutine: Any, *, eager: bool = False) -> asyncio.Task[None]:
        self.runners += 1
        return super()._spawn(coroutine, eager=eager)


@contextlib.contextmanager
def greeted(handler: Any) -> Iterator[tuple[ServerThread, RawClient, CountsRunners]]:
    """A CountsRunners server for ``handler``, and a client past EHLO."""
    with serving(lambda: CountsRunners(handler)) as server, RawClient(server.port) as client:
        assert text(client.reply()).startswith("220 ")
        assert client.command("EHLO c.example").code == 250
        yield server, client, server.protocols[0]


class OnlyDataHook:
    def __init__(self) -> None:
        self.delivered: list[tuple[str | None, list[str]]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.delivered.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 stored"


class MailHook(OnlyDataHook):
    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        return "250 sender ok"


def test_commands_of_the_servers_own_code_need_no_runner() -> None:
    """NOOP, MAIL and RCPT with no hook of their own are answered by the sans-I/O
    session where they arrive, and so is DATA: its message is received there, and
    one runner starts at its end to run handle_DATA.  Replies and the delivered
    envelope are the same either way."""
    handler = OnlyDataHook()
    with greeted(handler) as (server, client, protocol):
        before = server.call(lambda: protocol.runners)
        client.send(b"NOOP\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        assert [text(reply) for reply in client.replies(3)] == ["250 OK"] * 3
        assert server.call(lambda: protocol.runners) == before
        client.send(b"RCPT TO:<c@example.com>\r\nDATA\r\n")
        assert [text(reply) for reply in client.replies(2)] == ["250 OK", GO_AHEAD]
        client.send(MESSAGE + b".\r\n")
        assert text(client.reply()) == "250 stored"
        assert server.call(lambda: protocol.runners) == before + 1
        assert text(client.command("QUIT")) == "221 Bye"
    assert handler.delivered == [("a@example.com", ["b@example.com", "c@example.com"])]


def test_a_hook_sends_its_command_to_a_runner() -> None:
    handler = MailHook()
    with serving(lambda: CountsRunners(handler)) as server, RawClient(server.port) as client:
        assert text(client.reply()).startswith("220 ")
        assert text(client.command("HELO c.example")) == f"250 {HOST}"
        protocol = server.protocols[0]
        before = server.call(lambda: protocol.runners)
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 sender ok"
        assert server.call(lambda: protocol.runners) == before + 1
        assert text(client.command("QUIT")) == "221 Bye"


def test_a_failure_answered_in_the_callback_goes_through_handle_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure of the session's own code where a command arrives becomes that
    command's reply, from handle_exception in a task, and later commands are
    still answered in order."""
    from smtpwire.common.server_session import ServerSession

    def broken(self: ServerSession, command: Any) -> str:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(ServerSession, "answer", broken)
    handler = ExceptionHook()
    with serving(lambda: CountsRunners(handler)) as server, RawClient(server.port) as client:
        assert text(client.reply()).startswith("220 ")
        assert text(client.command("HELO c.example")) == f"250 {HOST}"
        client.send(b"NOOP\r\nRSET\r\n")
        replies = [text(reply) for reply in client.replies(2)]
        assert text(client.command("QUIT")) == "221 Bye"
    assert replies == ["451 4.3.0 handled broken on purpose", "250 OK"]
    assert handler.ran_in_task == [True]


class EncodeFailsOnce(CountsRunners):
    """A subclass whose reply encoding fails once (for the first 250 to MAIL)."""

    failed = False

    def _encode_reply(self, status: str) -> bytes:
        if status == "250 OK" and self._current_command == "MAIL" and not self.failed:
            self.failed = True
            raise RuntimeError("encoding broken once")
        return super()._encode_reply(status)


def test_a_failing_reply_override_in_the_callback_becomes_a_reply() -> None:
    """Regression: a subclass's _encode_reply (or _queue_reply) failing on a command
    answered in the read callback escaped data_received; now, as in a runner, it
    becomes the command's reply through handle_exception."""
    with serving(lambda: EncodeFailsOnce(Sink())) as server, RawClient(server.port) as client:
        assert text(client.reply()).startswith("220 ")
        assert text(client.command("HELO c.example")) == f"250 {HOST}"
        client.send(b"MAIL FROM:<a@example.com>\r\nNOOP\r\n")
        replies = [text(reply) for reply in client.replies(2)]
        assert text(client.command("QUIT")) == "221 Bye"
    assert replies == ["500 Error: (RuntimeError) encoding broken once", "250 OK"]


def test_the_command_lines_server_answers_in_the_read_callback_too() -> None:
    """Regression (review): the CLI's session class overrides _command (to refuse
    commands while draining), which used to turn the read-callback path off for
    the server users actually run; it declares the override harmless."""
    import asyncio

    from smtpwire.server._cli_serving import CliSMTP, Drain

    loop = asyncio.new_event_loop()
    try:
        session = CliSMTP(Sink(), drain=Drain(), hostname=HOST, loop=loop)
        plain = SMTP(Sink(), hostname=HOST, loop=loop)
    finally:
        loop.close()
    assert session._runnerless_verbs == plain._runnerless_verbs
    assert plain._runnerless_verbs == {b"NOOP", b"MAIL", b"RCPT", b"DATA"}


session_mark: contextvars.ContextVar[str] = contextvars.ContextVar("session_mark", default="")


class MarksTheSession:
    """handle_EHLO sets a contextvar; handle_DATA, the next hook, reads it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, bytes]] = []

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        session.host_name = hostname
        session_mark.set(f"greeted {hostname}")
        return lines

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.wait_for(asyncio.sleep(0), WAIT)  # needs a task on 3.12+
        self.seen.append((session_mark.get(), in_a_task(), envelope.original_content or b""))
        return "250 seen"


@pytest.mark.parametrize("in_one_write", [False, True], ids=["after 354", "with DATA"])
def test_a_message_received_in_the_read_callback_reaches_handle_data_in_the_session_task(
    in_one_write: bool,
) -> None:
    """DATA's message is received by the read callback; handle_DATA still runs in
    a task that sees the contextvars of the session's earlier hooks, and the 354
    goes before the 250 even when the message came in the same read as DATA."""
    handler = MarksTheSession()
    with greeted(handler) as (server, client, protocol):
        before = server.call(lambda: protocol.runners)
        client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        if in_one_write:
            client.send(MESSAGE + b".\r\nNOOP\r\n")
            replies = [text(reply) for reply in client.replies(5)]
        else:
            replies = [text(reply) for reply in client.replies(3)]
            client.send(MESSAGE + b".\r\nNOOP\r\n")
            replies += [text(reply) for reply in client.replies(2)]
        assert replies == ["250 OK", "250 OK", GO_AHEAD, "250 seen", "250 OK"]
        assert server.call(lambda: protocol.runners) == before + 1
        assert text(client.command("QUIT")) == "221 Bye"
    assert handler.seen == [("greeted c.example", True, MESSAGE)]


class Streams:
    async def handle_DATA_STREAM(self, server: SMTP, session: Session, stream: Any) -> str:
        return "250 streamed"


@pytest.mark.parametrize(
    ("handler", "options"),
    [(Streams(), {}), (Sink(), {"min_data_rate": 100.0})],
    ids=["handle_DATA_STREAM", "min_data_rate"],
)
def test_data_stays_with_a_runner_when_its_message_involves_more(
    handler: Any, options: dict[str, Any]
) -> None:
    """A handler that streams the message runs while it arrives, and the data rate
    check is a runner's: DATA is not received in the read callback then."""
    loop = asyncio.new_event_loop()
    try:
        server = SMTP(handler, hostname=HOST, loop=loop, **options)
    finally:
        loop.close()
    assert server._runnerless_verbs == {b"NOOP", b"MAIL", b"RCPT"}


def test_a_refused_data_in_the_read_callback_is_answered_there() -> None:
    """DATA with no recipient is refused where it arrives; no runner starts."""
    with serving(lambda: CountsRunners(Sink())) as server, RawClient(server.port) as client:
        assert text(client.reply()).startswith("220 ")
        assert text(client.command("HELO c.example")) == f"250 {HOST}"
        protocol = server.protocols[0]
        before = server.call(lambda: protocol.runners)
        assert text(client.command("DATA")) == "503 Error: need RCPT command"
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert text(client.command("DATA")) == "503 Error: need RCPT command"
        assert server.call(lambda: protocol.runners) == before
        assert text(client.command("QUIT")) == "221 Bye"


def test_connections_share_their_set_of_verbs_answered_in_the_callback() -> None:
    """One set per kind of connection, not one per connection (S4: every idle
    connection carried its own, about 200 bytes)."""
    loop = asyncio.new_event_loop()
    try:
        first, second = (SMTP(Sink(), hostname=HOST, loop=loop) for _ in range(2))
        rated = SMTP(Sink(), hostname=HOST, loop=loop, min_data_rate=100.0)
    finally:
        loop.close()
    assert first._runnerless_verbs is second._runnerless_verbs
    assert rated._runnerless_verbs == first._runnerless_verbs - {b"DATA"}
