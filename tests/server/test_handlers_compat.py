"""aiosmtpd 1.4.6 compatibility of the ready-made handlers, called directly.

aiosmtpd's ``MessageBase.prepare_message`` parses ``bytes`` *or* ``bytearray``
content (a hook may leave a bytearray in ``envelope.content``) and refuses
anything else with ``TypeError("Expected str or bytes, got <class ...>")``.
"""

from __future__ import annotations

import asyncio
import email.message
import io
from typing import Any

import pytest

from smtpwire.server.handlers import Debugging, Message, MessageBase
from smtpwire.server.session import Envelope, Session

NO_SERVER: Any = None  # the handlers never look at the server

MESSAGE = b"From: anne@example.com\r\nSubject: A test\r\n\r\nHi Bart.\r\n"


def make_envelope(content: Any) -> Envelope:
    envelope = Envelope(mail_from="anne@example.com", rcpt_tos=["bart@example.com"])
    envelope.content = content
    envelope.original_content = bytes(MESSAGE)
    return envelope


def make_session() -> Session:
    session = Session(asyncio.get_running_loop())
    session.peer = ("192.0.2.1", 4567)
    return session


class Recording(Message):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[email.message.Message] = []

    def handle_message(self, message: email.message.Message) -> None:
        self.messages.append(message)


async def test_prepare_message_parses_bytearray_content_like_bytes() -> None:
    message = MessageBase().prepare_message(make_session(), make_envelope(bytearray(MESSAGE)))
    assert message["Subject"] == "A test"
    assert message.get_payload() == "Hi Bart.\r\n"
    assert message["X-Peer"] == "('192.0.2.1', 4567)"
    assert message["X-MailFrom"] == "anne@example.com"
    assert message["X-RcptTo"] == "bart@example.com"


async def test_message_handler_receives_bytearray_content() -> None:
    handler = Recording()
    status = await handler.handle_DATA(NO_SERVER, make_session(), make_envelope(bytearray(MESSAGE)))
    assert status == "250 OK"
    assert [message["Subject"] for message in handler.messages] == ["A test"]


@pytest.mark.parametrize(
    ("content", "name"),
    [(memoryview(MESSAGE), "memoryview"), ([MESSAGE], "list"), (None, "NoneType")],
)
async def test_prepare_message_still_refuses_other_types(content: Any, name: str) -> None:
    with pytest.raises(TypeError, match=rf"^Expected str or bytes, got <class '{name}'>$"):
        MessageBase().prepare_message(make_session(), make_envelope(content))


async def test_debugging_prints_bytearray_content_as_text() -> None:
    # aiosmtpd printed each line's repr (bytearray(b'...')); the text is what helps.
    stream = io.StringIO()
    await Debugging(stream).handle_DATA(
        NO_SERVER, make_session(), make_envelope(bytearray(MESSAGE))
    )
    assert stream.getvalue() == (
        "---------- MESSAGE FOLLOWS ----------\n"
        "From: anne@example.com\n"
        "Subject: A test\n"
        "X-Peer: ('192.0.2.1', 4567)\n"
        "\n"
        "Hi Bart.\n"
        "------------ END MESSAGE ------------\n"
    )
