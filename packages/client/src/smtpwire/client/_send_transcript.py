"""The client ``smtpwire-send`` drives: :class:`~smtpwire.client.smtp.SMTP` (or
LMTP) that writes the session's transcript and can hide an extension it was
told not to use.

The client has no public wire hook, so the transcript comes from the two
internal methods every byte goes through: ``_exchange`` (all that is written:
command lines, BDAT chunks, the message) and ``_read`` (every reply, the
greeting included).  Living in the same package, this subclass is kept in step
with them by the tests; a public ``on_wire`` hook on the protocol would be the
cleaner seam (see docs/sender.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from smtpwire.common.replies import SMTPReply

from ._payload import Payload
from ._send_output import Output
from .lmtp import LMTP
from .protocol import SMTPProtocol
from .response import SMTPResponse
from .smtp import SMTP
from .typing import DefaultNumType

__all__ = ["TranscriptLMTP", "TranscriptSMTP", "reply_lines"]

CLIENT: Final = "C: "
SERVER: Final = "S: "
INFO: Final = "=== "
MASK: Final = "********"
_CONTINUE: Final = 334  # an AUTH challenge: the client's next line is a secret


class TranscriptSMTP(SMTP):
    def __init__(self, *, output: Output, hide: frozenset[str] = frozenset(), **kwargs: Any):
        super().__init__(**kwargs)
        self._output = output
        self._hidden = hide
        self._secret_next = False

    def supports_extension(self, extension: str, /) -> bool:
        # --no-pipelining: the client pipelines whenever this says yes.
        if extension.lower() in self._hidden:
            return False
        return super().supports_extension(extension)

    async def _exchange(
        self,
        lines: Sequence[bytes],
        timeout: DefaultNumType,
        *,
        replies: int | None = None,
        stream: Payload | None = None,
    ) -> list[SMTPReply]:
        if self._output.transcript:
            for line in lines:
                self._log_written(line)
            if stream is not None:
                self._log_data(stream.encoded)
        return await super()._exchange(lines, timeout, replies=replies, stream=stream)

    async def _read(
        self, protocol: SMTPProtocol, count: int, timeout: float | None
    ) -> list[SMTPReply]:
        replies = await super()._read(protocol, count, timeout)
        for reply in replies:
            for text in reply_lines(reply):
                self._output.wire(SERVER + text)
        self._secret_next = bool(replies) and replies[-1].code == _CONTINUE
        return replies

    async def starttls(self, **kwargs: Any) -> SMTPResponse:
        response = await super().starttls(**kwargs)
        self._output.wire(INFO + describe_tls(self))
        return response

    def _log_written(self, written: bytes) -> None:
        """One write: a command line, then (BDAT) the chunk that follows it."""
        command, _, chunk = written.partition(b"\r\n")
        self._output.wire(CLIENT + self._masked(command.decode("utf-8", "replace")))
        if chunk:
            self._log_data(chunk)

    def _masked(self, line: str) -> str:
        if self._secret_next:
            return MASK
        verb, _, rest = line.partition(" ")
        if verb.upper() == "AUTH":
            mechanism, _, initial_response = rest.partition(" ")
            return f"{verb} {mechanism} {MASK}" if initial_response else line
        return line

    def _log_data(self, data: bytes | None) -> None:
        if data is None:
            self._output.wire(CLIENT + "<message streamed>")
        elif self._output.message_data:
            for line in data.decode("utf-8", "replace").split("\r\n")[:-1]:
                self._output.wire(CLIENT + line)
        else:
            self._output.wire(f"{CLIENT}<{len(data)} bytes of message data: -vv shows them>")


class TranscriptLMTP(TranscriptSMTP, LMTP):
    """The same over LMTP (LHLO, one reply per recipient after the message)."""


def reply_lines(reply: SMTPReply) -> list[str]:
    last = len(reply.lines) - 1
    return [
        f"{reply.code}{' ' if index == last else '-'}{text}"
        for index, text in enumerate(reply.lines)
    ]


def describe_tls(client: SMTP) -> str:
    cipher = client.get_transport_info("cipher")
    if not cipher:
        return "TLS started"
    name, version, _bits = cipher
    return f"TLS started: {version} {name}"
