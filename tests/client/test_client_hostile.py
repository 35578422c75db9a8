"""smtpwire.client against a hostile or broken server, and against hostile input
from its own caller.

The server is a scripted fake (support.fake_smtp) that records every chunk it
receives, so these tests check the wire itself: what was (not) written, in how
many writes, and which reply each command was paired with.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtpwire.client.smtp as smtp_module
from smtpwire.client import (
    SMTP,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from smtpwire.client.protocol import SMTPProtocol
from support.fake_smtp import (
    WAIT,
    ClientInputSpy,
    FakeConnection,
    FakeSMTPServer,
    TLSFiles,
    client_for,
)

PROPERTY = settings(max_examples=30, deadline=None)
MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"
SENDER = "sender@example.com"
RECIPIENTS = ["a@example.com", "b@example.com", "c@example.com"]


def answering(
    replies: dict[bytes, bytes | None],
) -> Callable[[FakeConnection, bytes], bytes | None]:
    """A script: ``replies`` by command line prefix (upper case), else the default."""

    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        for prefix, reply in replies.items():
            if line.upper().startswith(prefix):
                return reply
        return connection.default(line)

    return on_line


async def connected(server: FakeSMTPServer, **options: object) -> SMTP:
    client = client_for(server, **options)
    await client.connect()
    return client


async def closed_by_client(connection: FakeConnection) -> None:
    await asyncio.wait_for(connection.closed.wait(), WAIT)


# --- malformed replies -----------------------------------------------------------------------

MALFORMED = {
    "non-numeric code": b"abc hello\r\n",
    "short code": b"25 hello\r\n",
    "code out of range": b"600 what\r\n",
    "no separator": b"250x\r\n",
    "NUL": b"250 a\x00b\r\n",
    "bare CR inside": b"250 a\rb\r\n",
    "mixed codes": b"250-first\r\n251 second\r\n",
    "mixed codes, same class": b"250-first\r\n550 second\r\n",
}
TOO_LONG = {
    "9 KiB line": b"250 " + b"x" * (9 * 1024) + b"\r\n",
    "8 KiB + 1 line": b"250 " + b"x" * (8192 - 5) + b"\r\n",
    "40 KiB reply": b"".join(b"250-" + b"x" * 398 + b"\r\n" for _ in range(100)) + b"250 end\r\n",
    "32 KiB + 1 reply": b"".join(b"250-" + b"x" * 1018 + b"\r\n" for _ in range(31))
    + b"250 "
    + b"x" * 1019
    + b"\r\n",
    "endless line": b"250 " + b"x" * (9 * 1024),  # no line ending, ever
}


@pytest.mark.parametrize("reply", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_reply_is_an_error_and_closes(reply: bytes) -> None:
    async with FakeSMTPServer(on_line=answering({b"NOOP": reply})) as server:
        client = await connected(server)
        await client.ehlo()
        with pytest.raises(SMTPResponseException) as caught:
            await client.noop()
        assert caught.value.code == -1
        assert caught.value.message.startswith("Malformed SMTP response line")
        assert not client.is_connected
        await closed_by_client(server.connection)


@pytest.mark.parametrize("reply", list(TOO_LONG.values()), ids=list(TOO_LONG))
async def test_oversized_reply_is_an_error_and_closes(reply: bytes) -> None:
    async with FakeSMTPServer(on_line=answering({b"NOOP": reply})) as server:
        client = await connected(server)  # the default timeout (5 s) must not be needed
        await client.ehlo()
        with pytest.raises(SMTPResponseException) as caught:
            await client.noop()
        assert caught.value.code == -1
        assert caught.value.message == "Response too long"
        assert not client.is_connected
        await closed_by_client(server.connection)


async def test_replies_at_the_caps_are_accepted() -> None:
    longest_line = b"250 " + b"x" * (8192 - 6) + b"\r\n"
    longest_reply = (
        b"".join(b"250-" + b"y" * 1018 + b"\r\n" for _ in range(31))
        + b"250 "
        + b"y" * 1018
        + b"\r\n"
    )
    assert len(longest_line) == 8192
    assert len(longest_reply) == 32 * 1024
    script = answering({b"NOOP": longest_line, b"RSET": longest_reply})
    async with FakeSMTPServer(on_line=script) as server:
        client = await connected(server)
        assert await client.noop() == SMTPResponse(250, "x" * (8192 - 6))
        response = await client.rset()
        assert response.message == "\n".join(["y" * 1018] * 32)
        assert client.is_connected
        client.close()


@pytest.mark.parametrize(
    "greeting", [b"hello there\r\n", b"220-a\r\n221 b\r\n", b"220 \x00\r\n"], ids=repr
)
async def test_malformed_greeting(greeting: bytes) -> None:
    async with FakeSMTPServer(greeting=greeting) as server:
        client = client_for(server)
        with pytest.raises(SMTPResponseException) as caught:
            await client.connect()
        assert caught.value.code == -1
        assert not client.is_connected
        await closed_by_client(server.connection)


async def test_refusing_greeting() -> None:
    async with FakeSMTPServer(greeting=b"554 go away\r\n") as server:
        client = client_for(server)
        with pytest.raises(SMTPConnectResponseError) as caught:
            await client.connect()
        assert (caught.value.code, caught.value.message) == (554, "go away")
        assert not client.is_connected
        await closed_by_client(server.connection)


async def test_bare_lf_replies_are_accepted() -> None:
    script = answering(
        {
            b"EHLO": b"250-fake.example\n250-PIPELINING\n250 SIZE 1000\n",
            b"NOOP": b"250 fine\n",
            b"MAIL": b"250 sender ok\n",
            b"RCPT": b"250 rcpt ok\n",
            b"DATA": b"354 go\n",
        }
    )
    async with FakeSMTPServer(greeting=b"220 hi\n", on_line=script) as server:
        client = client_for(server)
        assert await client.connect() == SMTPResponse(220, "hi")
        assert await client.noop() == SMTPResponse(250, "fine")
        assert client.supports_extension("pipelining")
        assert client.esmtp_extensions["size"] == "1000"
        refused, text = await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert (refused, text) == ({}, "OK queued")
        client.close()


# --- replies cut into arbitrary pieces ----------------------------------------------------------

reply_texts = st.lists(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    min_size=1,
    max_size=5,
)


@PROPERTY
@given(
    code=st.integers(200, 599),
    texts=reply_texts,
    endings=st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=5, max_size=5),
    cuts=st.lists(st.integers(0, 400), max_size=10),
)
def test_reply_split_anywhere_parses_the_same(
    code: int, texts: list[str], endings: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(
        f"{code}{'-' if index < len(texts) - 1 else ' '}{text}".encode() + endings[index]
        for index, text in enumerate(texts)
    )
    points = sorted({cut % (len(wire) + 1) for cut in cuts} | {0, len(wire)})
    chunks = [wire[start:end] for start, end in itertools.pairwise(points)]
    expected = SMTPResponse(code, "\n".join(text.strip(" \t") for text in texts))

    async def parse() -> SMTPResponse:
        protocol = SMTPProtocol(asyncio.get_running_loop())
        for chunk in chunks:
            protocol.data_received(chunk)
        return SMTPResponse.from_reply(await asyncio.wait_for(protocol.read_reply(), WAIT))

    assert asyncio.run(parse()) == expected


# --- unsolicited lines ------------------------------------------------------------------------


def counting_noop(extra_after_first: bytes = b""):  # type: ignore[no-untyped-def]
    """NOOP number n is answered "250 noop n"; the first answer is followed by ``extra``."""
    count = [0]

    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line == b"NOOP":
            count[0] += 1
            reply = f"250 noop {count[0]}\r\n".encode()
            return reply + extra_after_first if count[0] == 1 else reply
        return connection.default(line)

    return on_line


async def test_unsolicited_line_with_the_greeting_is_dropped() -> None:
    greeting = b"220 hello\r\n250 surprise\r\n"
    async with FakeSMTPServer(greeting=greeting, on_line=counting_noop()) as server:
        client = await connected(server)
        assert await client.noop() == SMTPResponse(250, "noop 1")
        assert client.last_ehlo_response is not None
        assert client.last_ehlo_response.message.startswith("fake.example Hello")
        assert await client.noop() == SMTPResponse(250, "noop 2")
        client.close()


@pytest.mark.parametrize(
    "extra", [b"250 surprise\r\n", b"250-sur\r\n250 prise\r\n", b"554 surprise\r\n"], ids=repr
)
async def test_unsolicited_reply_after_a_reply_does_not_shift(extra: bytes) -> None:
    async with FakeSMTPServer(on_line=counting_noop(extra)) as server:
        client = await connected(server)
        await client.ehlo()
        for number in (1, 2, 3):
            assert await client.noop() == SMTPResponse(250, f"noop {number}")
        client.close()


async def test_unprompted_reply_between_commands_does_not_shift() -> None:
    async with FakeSMTPServer(on_line=counting_noop()) as server:
        client = await connected(server)
        await client.ehlo()
        spy = ClientInputSpy(client)
        server.connection.send(b"250 surprise\r\n")
        await spy.wait_for(b"surprise")
        assert await client.noop() == SMTPResponse(250, "noop 1")
        server.connection.send(b"250-another\r\n250 surprise\r\n")
        await spy.wait_for(b"another\r\n250 surprise")
        assert await client.noop() == SMTPResponse(250, "noop 2")
        client.close()


async def test_the_next_command_after_an_unsolicited_421_reports_it() -> None:
    async with FakeSMTPServer(on_line=counting_noop()) as server:
        client = await connected(server)
        await client.ehlo()
        server.connection.send(b"421 4.4.2 fake.example Error: timeout exceeded\r\n")
        await asyncio.wait_for(server.connection.closed.wait(), WAIT)
        with pytest.raises(SMTPServerDisconnected, match=r"421 4\.4\.2 fake\.example"):
            await client.noop()
        assert not client.is_connected


async def test_unsolicited_reply_after_pipelined_replies_does_not_shift() -> None:
    script = answering({b"DATA": b"354 go ahead\r\n250 surprise\r\n"})
    async with FakeSMTPServer(extensions=["PIPELINING"], on_line=script) as server:
        client = await connected(server)
        refused, text = await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert (refused, text) == ({}, "OK queued")
        assert await client.vrfy("a@example.com") == SMTPResponse(250, "OK")
        client.close()


# --- STARTTLS response injection (aiosmtplib GHSA-vxj7-4xrp-5vr4) -------------------------------


@pytest.mark.parametrize(
    "injected",
    [b"250 injected\r\n", b"250-injected\r\n", b"250-injected\r\n250 injected too\r\n"],
    ids=["complete", "partial multi-line", "complete multi-line"],
)
@pytest.mark.parametrize("context", ["given", "built from cert_bundle"])
async def test_starttls_injection_in_the_220_write(
    injected: bytes, context: str, tmp_path: Path
) -> None:
    tls = TLSFiles(tmp_path)
    script = answering({b"STARTTLS": b"220 go ahead\r\n" + injected})
    async with FakeSMTPServer(tls_context=tls.server_context(), on_line=script) as server:
        options: dict[str, object] = (
            {"tls_context": tls.client_context()}
            if context == "given"
            else {"cert_bundle": str(tls.ca_file)}
        )
        client = await connected(server, start_tls=True, **options)
        assert client.get_transport_info("sslcontext") is not None
        response = await client.ehlo()
        assert "injected" not in response.message
        assert response.message.startswith("fake.example Hello")
        assert await client.noop() == SMTPResponse(250, "OK")
        assert server.connection.tls
        client.close()


async def test_starttls_context_is_built_before_starttls_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a TLS context may read files in a thread; if that happened after
    the 220, plaintext injected meanwhile could reach the reply parser.  The client
    builds it before sending STARTTLS, so there is no await between discarding the
    plaintext and handing the transport to TLS."""
    tls = TLSFiles(tmp_path)
    real_build = smtp_module.build_tls_context
    starttls_seen_at_build: list[bool] = []

    def recording_build(**kwargs: object):  # type: ignore[no-untyped-def]
        lines = [line for connection in server.connections for line in connection.lines]
        starttls_seen_at_build.append(any(line.upper() == b"STARTTLS" for line in lines))
        return real_build(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(smtp_module, "build_tls_context", recording_build)
    script = answering({b"STARTTLS": b"220 go ahead\r\n250 injected\r\n"})
    async with FakeSMTPServer(tls_context=tls.server_context(), on_line=script) as server:
        client = await connected(server)
        await client.ehlo()
        await client.starttls(cert_bundle=str(tls.ca_file))
        assert starttls_seen_at_build == [False]
        response = await client.ehlo()
        assert "injected" not in response.message
        assert response.message.startswith("fake.example Hello")
        await client.quit()


# --- disconnects ---------------------------------------------------------------------------------


def close_on_connect(connection: FakeConnection) -> None:
    connection.close()


@pytest.mark.parametrize("start_tls", [False, None])
async def test_server_closes_after_greeting(start_tls: bool | None) -> None:
    async with FakeSMTPServer(on_connect=close_on_connect) as server:
        client = client_for(server, start_tls=start_tls)

        async def connect_and_noop() -> None:
            await client.connect()  # with start_tls=False this may still succeed
            await client.noop()

        with pytest.raises(SMTPServerDisconnected):
            await connect_and_noop()
        assert not client.is_connected


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_server_closes_instead_of_replying(how: str) -> None:
    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line == b"NOOP":
            getattr(connection, how)()
            return None
        return connection.default(line)

    async with FakeSMTPServer(on_line=on_line) as server:
        client = await connected(server)
        await client.ehlo()
        with pytest.raises(SMTPServerDisconnected):
            await client.noop()
        assert not client.is_connected
        with pytest.raises(SMTPServerDisconnected):
            await client.noop()


async def test_server_closes_after_354() -> None:
    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line == b"DATA":
            connection.close_after_reply = True
        return connection.default(line)

    async with FakeSMTPServer(on_line=on_line) as server:
        client = await connected(server)
        with pytest.raises(SMTPServerDisconnected):
            await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert not client.is_connected


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_server_closes_mid_data(how: str) -> None:
    async with FakeSMTPServer() as server:
        client = await connected(server)

        async def source() -> AsyncIterator[bytes]:
            yield b"Subject: part one\r\n\r\n"
            connection = server.connection
            await server.wait_until(lambda: b"part one" in connection.received)
            getattr(connection, how)()
            await closed_by_client(connection)
            for _ in range(100):  # the client notices at its next write or read
                yield b"more\r\n" * 1000

        with pytest.raises(SMTPServerDisconnected):
            await client.sendmail(SENDER, RECIPIENTS, source())
        assert not client.is_connected
        assert server.connection.messages == []


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_quit_answered_by_closing(how: str) -> None:
    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line == b"QUIT":
            getattr(connection, how)()
            return None
        return connection.default(line)

    async with FakeSMTPServer(on_line=on_line) as server:
        client = await connected(server)
        await client.ehlo()
        assert await client.quit() == SMTPResponse(221, "")
        assert not client.is_connected


async def test_quit_with_reply() -> None:
    async with FakeSMTPServer() as server:
        client = await connected(server)
        assert await client.quit() == SMTPResponse(221, "Bye")
        assert not client.is_connected
        await closed_by_client(server.connection)


# --- injection refused before anything is written ---------------------------------------------

CONTROL = ["a@b\r.c", "a@b\n.c", "a@b\x00.c", "a@b.c\r\nRCPT TO:<x@y.z>", "a\u2028b@c.d"]
SMUGGLING = ["a@b> SIZE=1", "a@b.c> RCPT TO:<x@y.z", "a@b.c\u2028RCPT TO:<x@y.z>"]
BAD_ADDRESSES = CONTROL + SMUGGLING

Operation = Callable[[SMTP, str], Awaitable[object]]
OPERATIONS: dict[str, Operation] = {
    "mail": lambda client, bad: client.mail(bad),
    "mail utf-8": lambda client, bad: client.mail(bad, encoding="utf-8"),
    "mail option": lambda client, bad: client.mail("a@b.c", options=[bad]),
    "rcpt": lambda client, bad: client.rcpt(bad),
    "rcpt utf-8": lambda client, bad: client.rcpt(bad, encoding="utf-8"),
    "rcpt option": lambda client, bad: client.rcpt("a@b.c", options=[bad]),
    "vrfy": lambda client, bad: client.vrfy(bad),
    "expn": lambda client, bad: client.expn(bad),
    "sendmail sender": lambda client, bad: client.sendmail(bad, ["ok@b.c"], MESSAGE),
    "sendmail recipient": lambda client, bad: client.sendmail("ok@b.c", ["ok@b.c", bad], MESSAGE),
    "sendmail rcpt option": lambda client, bad: client.sendmail(
        "ok@b.c", ["ok@b.c"], MESSAGE, rcpt_options=[bad]
    ),
    "ehlo": lambda client, bad: client.ehlo(hostname=bad),
    "helo": lambda client, bad: client.helo(hostname=bad),
}
RAW_OPERATIONS: dict[str, Operation] = {
    "execute_command argument": lambda client, bad: client.execute_command(
        b"VRFY", bad.encode("utf-8")
    ),
    "execute_command verb": lambda client, bad: client.execute_command(bad.encode("utf-8")),
}


async def assert_refused_without_writing(operation: Operation, bad: str) -> None:
    async with FakeSMTPServer() as server:
        client = await connected(server)
        await client.ehlo()
        connection = server.connection
        before = len(connection.received)
        with pytest.raises(ValueError):  # noqa: PT011 - the API promises exactly ValueError
            await operation(client, bad)
        # A command after the refused one is the next thing on the wire.
        assert await client.execute_command(b"NOOP") == SMTPResponse(250, "OK")
        assert connection.received[before:] == b"NOOP\r\n"
        client.close()


INJECTION_CASES = [
    pytest.param(name, bad, id=f"{name}-{bad!r}")
    for name in OPERATIONS
    for bad in BAD_ADDRESSES
    # Spaces separate options, so a space in an option is no injection.
    if not (name.endswith("option") and bad in SMUGGLING[:2])
]


@pytest.mark.parametrize(("name", "bad"), INJECTION_CASES)
async def test_injection_refused_before_writing(name: str, bad: str) -> None:
    await assert_refused_without_writing(OPERATIONS[name], bad)


@pytest.mark.parametrize("bad", CONTROL, ids=repr)
@pytest.mark.parametrize("name", list(RAW_OPERATIONS))
async def test_raw_command_injection_refused_before_writing(name: str, bad: str) -> None:
    await assert_refused_without_writing(RAW_OPERATIONS[name], bad)


@pytest.mark.parametrize("bad", [CONTROL[3], SMUGGLING[0]], ids=repr)
async def test_sendmail_refuses_before_its_first_byte(bad: str) -> None:
    """aiosmtplib 5.1.3 validates every address first: on a fresh connection not
    even the implicit EHLO goes out for a message that cannot be sent."""
    async with FakeSMTPServer() as server:
        client = await connected(server)
        with pytest.raises(ValueError):  # noqa: PT011
            await client.sendmail("ok@b.c", ["ok@b.c", bad], MESSAGE)
        assert await client.execute_command(b"NOOP") == SMTPResponse(250, "OK")
        assert server.connection.received == b"NOOP\r\n"
        client.close()


@pytest.mark.parametrize(
    "padded", ["a@b.c\r", "a@b.c\n", "a@b.c\r\n", "\r\na@b.c", "a@b.c\x00"], ids=repr
)
@pytest.mark.parametrize("name", ["mail", "rcpt", "vrfy", "sendmail recipient", "ehlo"])
async def test_padding_control_characters_never_reach_the_wire(name: str, padded: str) -> None:
    """Leading/trailing line breaks may be stripped (as parseaddr does) or refused,
    but never written."""
    async with FakeSMTPServer() as server:
        client = await connected(server)
        await client.ehlo()
        connection = server.connection
        before = len(connection.lines)
        with contextlib.suppress(ValueError):
            await OPERATIONS[name](client, padded)
        await client.execute_command(b"NOOP")
        commands = connection.lines[before:]
        assert commands[-1] == b"NOOP"
        for line in commands:
            assert line, "an empty command line: a line break got through"
            assert b"\r" not in line
            assert b"\x00" not in line
        client.close()


@pytest.mark.parametrize("bad", [*CONTROL, "me.example.com XCLIENT ADDR=1.2.3.4"], ids=repr)
async def test_local_hostname_injection_refused(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        SMTP(hostname="127.0.0.1", local_hostname=bad)
    async with FakeSMTPServer() as server:
        client = client_for(server)
        with pytest.raises(ValueError):  # noqa: PT011
            await client.connect(local_hostname=bad)
        assert not client.is_connected
        # Nothing connected for the refused attempt: the next connection is the first.
        good = await connected(server)
        await good.ehlo()
        await server.wait_connected()
        assert len(server.connections) == 1
        assert server.connection.lines == [b"EHLO client.example"]
        good.close()


# --- pipelining --------------------------------------------------------------------------------

ENVELOPE = (
    b"MAIL FROM:<sender@example.com>\r\n"
    b"RCPT TO:<a@example.com>\r\n"
    b"RCPT TO:<b@example.com>\r\n"
    b"RCPT TO:<c@example.com>\r\n"
    b"DATA\r\n"
)


def chunks_after_ehlo(connection: FakeConnection) -> list[bytes]:
    index = next(i for i, chunk in enumerate(connection.chunks) if chunk.startswith(b"EHLO"))
    return connection.chunks[index + 1 :]


async def test_pipelined_envelope_goes_out_in_one_write() -> None:
    async with FakeSMTPServer(extensions=["PIPELINING"]) as server:
        client = await connected(server)
        refused, text = await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert (refused, text) == ({}, "OK queued")
        chunks = chunks_after_ehlo(server.connection)
        assert chunks[0] == ENVELOPE
        assert b"".join(chunks[1:]) == MESSAGE + b".\r\n"
        client.close()


async def test_without_pipelining_one_command_per_round_trip() -> None:
    async with FakeSMTPServer(extensions=["8BITMIME"]) as server:
        client = await connected(server)
        await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        chunks = chunks_after_ehlo(server.connection)
        assert chunks[:5] == ENVELOPE.splitlines(keepends=True)
        assert b"".join(chunks[5:]) == MESSAGE + b".\r\n"
        client.close()


async def test_pipelined_354_after_all_recipients_refused() -> None:
    def on_message(connection: FakeConnection, raw: bytes) -> bytes:
        return b"554 5.5.1 No valid recipients\r\n"

    script = answering({b"RCPT": b"550 5.1.1 No such user\r\n"})
    async with FakeSMTPServer(
        extensions=["PIPELINING"], on_line=script, on_message=on_message
    ) as server:
        client = await connected(server)
        with pytest.raises(SMTPRecipientsRefused) as caught:
            await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert [error.recipient for error in caught.value.recipients] == RECIPIENTS
        assert {(error.code, error.message) for error in caught.value.recipients} == {
            (550, "5.1.1 No such user")
        }
        connection = server.connection
        assert connection.messages == [b".\r\n"]  # ended the data phase, sent no message
        assert client.is_connected
        assert await client.noop() == SMTPResponse(250, "OK")
        assert connection.lines[-2:] == [b"RSET", b"NOOP"]
        client.close()


async def test_pipelined_354_after_sender_refused() -> None:
    script = answering({b"MAIL": b"553 sender rejected\r\n", b"RCPT": b"503 need MAIL\r\n"})
    async with FakeSMTPServer(
        extensions=["PIPELINING"],
        on_line=script,
        on_message=lambda connection, raw: b"503 no transaction\r\n",
    ) as server:
        client = await connected(server)
        with pytest.raises(SMTPSenderRefused) as caught:
            await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert (caught.value.code, caught.value.sender) == (553, SENDER)
        # The server holds a transaction that is not this message's: ending its data
        # would deliver it, so the client drops the connection without a single octet.
        await asyncio.wait_for(server.connection.closed.wait(), WAIT)
        assert server.connection.messages == []
        assert not client.is_connected


async def test_pipelined_data_refused_after_all_recipients_refused() -> None:
    script = answering({b"RCPT": b"550 no\r\n", b"DATA": b"503 no valid recipients\r\n"})
    async with FakeSMTPServer(extensions=["PIPELINING"], on_line=script) as server:
        client = await connected(server)
        with pytest.raises(SMTPRecipientsRefused):
            await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert server.connection.messages == []
        assert await client.noop() == SMTPResponse(250, "OK")
        client.close()


async def test_pipelined_some_recipients_refused() -> None:
    def on_line(connection: FakeConnection, line: bytes) -> bytes | None:
        if line == b"RCPT TO:<b@example.com>":
            return b"550 no such user\r\n"
        return connection.default(line)

    async with FakeSMTPServer(extensions=["PIPELINING"], on_line=on_line) as server:
        client = await connected(server)
        refused, text = await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert refused == {"b@example.com": SMTPResponse(550, "no such user")}
        assert text == "OK queued"
        assert server.connection.messages == [MESSAGE + b".\r\n"]
        client.close()


# --- 421: the server is closing ------------------------------------------------------------------

BYE = b"421 4.3.2 Service shutting down\r\n"


def shutting_down_at(prefix: bytes) -> Callable[[FakeConnection, bytes], bytes | None]:
    return answering({prefix: BYE})


CASES_421: dict[str, tuple[bytes, Operation, type[BaseException] | None]] = {
    "execute_command": (b"XFOO", lambda c, _: c.execute_command(b"XFOO"), None),
    "noop": (b"NOOP", lambda c, _: c.noop(), SMTPResponseException),
    "rset": (b"RSET", lambda c, _: c.rset(), SMTPResponseException),
    "help": (b"HELP", lambda c, _: c.help(), SMTPResponseException),
    "vrfy": (b"VRFY", lambda c, _: c.vrfy("a@b.c"), SMTPResponseException),
    "ehlo": (b"EHLO", lambda c, _: c.ehlo(), SMTPHeloError),
    "helo": (b"HELO", lambda c, _: c.helo(), SMTPHeloError),
    "mail": (b"MAIL", lambda c, _: c.mail("a@b.c"), SMTPSenderRefused),
    "rcpt": (b"RCPT", lambda c, _: c.rcpt("a@b.c"), SMTPRecipientRefused),
    "data": (b"DATA", lambda c, _: c.data(MESSAGE), SMTPDataError),
    "quit": (b"QUIT", lambda c, _: c.quit(), SMTPResponseException),
    "sendmail MAIL": (b"MAIL", lambda c, _: c.sendmail(SENDER, RECIPIENTS, MESSAGE), None),
    "sendmail RCPT": (b"RCPT", lambda c, _: c.sendmail(SENDER, RECIPIENTS, MESSAGE), None),
    "sendmail DATA": (b"DATA", lambda c, _: c.sendmail(SENDER, RECIPIENTS, MESSAGE), None),
}


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelining"])
@pytest.mark.parametrize("name", list(CASES_421))
async def test_421_closes_the_connection(name: str, pipelining: bool) -> None:
    prefix, operation, error = CASES_421[name]
    extensions = ["PIPELINING"] if pipelining else []
    async with FakeSMTPServer(extensions=extensions, on_line=shutting_down_at(prefix)) as server:
        client = await connected(server)
        if prefix != b"EHLO":
            await client.ehlo()
        if name.startswith("sendmail"):
            # After a 421 the next command of the transaction finds the connection
            # closed: SMTPServerDisconnected is as good an answer as the refusal.
            with pytest.raises(
                (SMTPResponseException, SMTPRecipientsRefused, SMTPServerDisconnected)
            ):
                await operation(client, "")
        elif error is None:
            assert await operation(client, "") == SMTPResponse(421, "4.3.2 Service shutting down")
        else:
            with pytest.raises(error) as caught:
                await operation(client, "")
            assert caught.value.code == 421  # type: ignore[attr-defined]
        assert not client.is_connected
        await closed_by_client(server.connection)


@pytest.mark.parametrize(
    ("prefix", "error"),
    [(b"MAIL", SMTPSenderRefused), (b"RCPT", SMTPRecipientsRefused)],
    ids=["MAIL", "RCPT"],
)
async def test_pipelined_421_is_reported_not_lost(
    prefix: bytes, error: type[BaseException]
) -> None:
    """With pipelining every reply is in hand when the 421 is seen: the caller
    should get the server's reason, not "Server not connected" from an attempt
    to use the connection the client has just closed itself."""
    async with FakeSMTPServer(
        extensions=["PIPELINING"], on_line=shutting_down_at(prefix)
    ) as server:
        client = await connected(server)
        with pytest.raises(error) as caught:
            await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        if isinstance(caught.value, SMTPRecipientsRefused):
            assert {refusal.code for refusal in caught.value.recipients} == {421}
        else:
            assert caught.value.code == 421  # type: ignore[attr-defined]
        assert not client.is_connected
        await closed_by_client(server.connection)


async def test_421_greeting() -> None:
    async with FakeSMTPServer(greeting=BYE) as server:
        client = client_for(server)
        with pytest.raises(SMTPConnectResponseError) as caught:
            await client.connect()
        assert caught.value.code == 421
        assert not client.is_connected
        await closed_by_client(server.connection)


async def test_421_to_final_data_reply() -> None:
    async with FakeSMTPServer(on_message=lambda connection, raw: BYE) as server:
        client = await connected(server)
        with pytest.raises(SMTPDataError) as caught:
            await client.sendmail(SENDER, RECIPIENTS, MESSAGE)
        assert caught.value.code == 421
        assert not client.is_connected
        await closed_by_client(server.connection)


# --- the message on the wire: dot-stuffing and line endings -----------------------------------

WIRE_CASES = [
    (b".leading\r\n", b"..leading\r\n.\r\n"),
    (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
    (b"no final newline", b"no final newline\r\n.\r\n"),
    (b"x\r\n.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
    (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
    (b"..two\r\n.", b"...two\r\n..\r\n.\r\n"),
    (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
    (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
    (b".", b"..\r\n.\r\n"),
    (b"", b"\r\n.\r\n"),
    (b"\r\n", b"\r\n.\r\n"),
]


def oracle(content: bytes) -> bytes:
    """What RFC 5321 says goes on the wire for ``content`` (written independently
    of smtpwire.common's encoder)."""
    normal = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if not normal.endswith(b"\r\n"):
        normal += b"\r\n"
    lines = normal[:-2].split(b"\r\n")
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


def test_oracle_agrees_with_the_table() -> None:
    for content, wire in WIRE_CASES:
        assert oracle(content) == wire, content


async def one_byte_at_a_time(content: bytes) -> AsyncIterator[bytes]:
    for index in range(len(content)):
        yield content[index : index + 1]


@pytest.mark.parametrize("how", ["data bytes", "data str", "sendmail", "stream", "pipelined"])
@pytest.mark.parametrize(("content", "wire"), WIRE_CASES, ids=[repr(c) for c, _ in WIRE_CASES])
async def test_message_bytes_on_the_wire(content: bytes, wire: bytes, how: str) -> None:
    extensions = ["PIPELINING"] if how == "pipelined" else []
    async with FakeSMTPServer(extensions=extensions) as server:
        client = await connected(server)
        if how == "data bytes":
            await client.mail(SENDER)
            await client.rcpt(RECIPIENTS[0])
            assert await client.data(content) == SMTPResponse(250, "OK queued")
        elif how == "data str":
            await client.mail(SENDER)
            await client.rcpt(RECIPIENTS[0])
            await client.data(content.decode("ascii"))
        elif how == "stream":
            await client.sendmail(SENDER, RECIPIENTS, one_byte_at_a_time(content))
        else:
            await client.sendmail(SENDER, RECIPIENTS, content)
        connection = server.connection
        assert connection.messages == [wire]
        data_line = connection.received.index(b"DATA\r\n") + len(b"DATA\r\n")
        assert connection.received[data_line:] == wire
        client.close()


@PROPERTY
@given(
    pieces=st.lists(
        st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b".\r\n", b" "]), max_size=30
    ),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_streamed_message_split_anywhere(pieces: list[bytes], cuts: list[int]) -> None:
    content = b"".join(pieces)
    points = sorted({cut % (len(content) + 1) for cut in cuts} | {0, len(content)})
    chunks = [content[start:end] for start, end in itertools.pairwise(points)]

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def scenario() -> list[bytes]:
        async with FakeSMTPServer() as server:
            client = await connected(server)
            await client.sendmail(SENDER, RECIPIENTS[:1], source())
            client.close()
            return server.connection.messages

    assert asyncio.run(scenario()) == [oracle(content)]
