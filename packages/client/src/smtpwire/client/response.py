"""``SMTPResponse``: a reply as aiosmtplib returns it (code and one text string)."""

from __future__ import annotations

from typing import NamedTuple

from smtpwire.common.replies import SMTPReply

__all__ = ["SMTPResponse"]


class SMTPResponse(NamedTuple):
    """A server reply; a multi-line reply's texts are joined with ``"\\n"``."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}"

    @classmethod
    def from_reply(cls, reply: SMTPReply) -> SMTPResponse:
        lines = reply.lines
        if len(lines) == 1:  # the common case, without a generator
            return cls(reply.code, lines[0].strip(" \t"))
        return cls(reply.code, "\n".join(line.strip(" \t") for line in lines))
