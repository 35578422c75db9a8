"""Watching a session from outside, and stepping into it: the server's observer seam.

An :class:`Observer` given to a server (``SMTP(handler, observer=...)``, or
``Controller(handler, observer=...)`` for every connection) sees each command line
the client sends, each reply the server writes and each message it accepts; and
before each command it may have the server answer in its place, wait, or drop the
connection (an :class:`Intervention`).  Hooks of the handler decide what the server
*does*; the observer is for what stands beside it: transcripts, metrics, audit
logs, and fault injection in tests (``smtpwire.server.testing`` is built on it).

Every method is called from the session's own code, in the event loop's thread,
and must not block: an observer that hands facts to another thread does so with
its own lock or queue.  What a method raises is logged (``mail.log``) and
otherwise ignored, so an observer cannot break a session.  A server without an
observer pays one attribute check per command and per reply.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .session import Envelope

# The server an observer is told about: an :class:`~smtpwire.server.smtp.SMTP` (or
# LMTP).  Typed loosely so that this module, which the engine imports, does not
# import the engine back.
Server = Any

__all__ = ["Drop", "Intervention", "Observer"]

_ONE_LINE_REPLY: Final = re.compile(r"[2-5][0-9][0-9]( [^\r\n\x00]*)?")


class Drop(enum.Enum):
    """How an :class:`Intervention` ends the connection."""

    #: Closed in place of the reply (replies already due are written first); the
    #: command is read, never answered.
    BEFORE_REPLY = "before reply"
    #: Reset (unread input is discarded).  At ``DATA``, after its ``354``, once the
    #: message starts to arrive; at ``BDAT``, at once, before its chunk is read;
    #: anywhere else, at once.
    DURING_DATA = "during data"


@dataclass(frozen=True)
class Intervention:
    """What the server does instead of going on as usual, returned by
    :meth:`Observer.intercept`: wait ``delay`` seconds, then either drop the
    connection (``drop``), answer with ``reply`` in place of the command, or, with
    neither, carry the command out as usual."""

    reply: str | None = None
    delay: float = 0.0
    drop: Drop | None = None

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError("a delay cannot be negative")
        if self.reply is not None and self.drop is not None:
            raise ValueError("an intervention either replies or drops the connection")
        if self.reply is not None and _ONE_LINE_REPLY.fullmatch(self.reply) is None:
            raise ValueError(f"not a reply: {self.reply!r} (a code 200-599, then text on one line)")


class Observer:
    """The base of an observer: every method does nothing, so a subclass overrides
    only what it needs.  Each method is given the server (one :class:`SMTP` per
    connection), so one observer may serve many connections; one per connection
    (made in a controller's ``factory()``) may keep per-connection state itself.
    """

    def command_received(self, server: Server, line: bytes) -> None:
        """A command line arrived: as received, without its line ending, before the
        server checks it; an AUTH line shows only its mechanism (as in the log:
        ``AUTH PLAIN ********``).  Lines the server takes as something other than
        a command are not reported: a message's content, the answers to AUTH's
        challenges, and a line too long to be a command (its ``500`` is)."""

    def reply_sent(self, server: Server, reply: bytes) -> None:
        """A reply line goes out: as written on the wire, without CRLF, enhanced
        status code included.  It is reported when the server queues it (the
        replies to a pipelined batch are written together, after the last of
        them); a reply that can no longer be written (the connection is closed)
        is not reported."""

    def message_accepted(self, server: Server, envelope: Envelope, replies: Sequence[str]) -> None:
        """A message was accepted by the handler: ``envelope`` is its transaction's
        (``server.envelope`` is already the next one's), ``replies`` the reply to
        it as on the wire (LMTP: one per recipient, called when at least one is
        positive).  It is called after ``reply_sent`` has reported the reply and
        before the reply is written, in the same step of the event loop, and only
        while the connection can still carry it: a client that has the reply
        knows the observer has seen its message, and a stop of the server cannot
        come in between."""

    def intercept(self, server: Server, command: str, line: bytes) -> Intervention | None:
        """Before ``command`` is carried out: None to go on as usual, or an
        :class:`Intervention`.  ``command`` is one of

        - ``"CONNECT"``: the connection is made, before anything is read or
          written.  A reply replaces the greeting and the connection is closed
          after it.  With implicit TLS, a drop acts before the handshake (the
          client's handshake fails); a delay or a reply after it, where the
          greeting would come.
        - a verb (``"MAIL"``, ``"DATA"``, an unknown one…): the first word of
          ``line``, upper-cased, called right after :meth:`command_received` and
          before the server checks the line, so it acts on a line the server
          would refuse too.  A reply is sent in place of the command's, which is
          not carried out (at ``BDAT``, the chunk is still read and dropped: it
          is never taken for commands).
        - ``"MESSAGE"``: a message's data is complete (after ``DATA``'s final dot,
          or ``BDAT … LAST``) and passed the server's own checks (size, line
          length, bare LF), before ``handle_DATA`` sees it (``handle_DATA_STREAM``:
          before its stream ends).  ``server.envelope`` is the message's.  A
          reply becomes the message's reply (LMTP: for every recipient); the
          handler does not get the message, and ``message_accepted`` is not
          called.

        ``line`` is the command line as :meth:`command_received` has it, empty
        for ``CONNECT`` and ``MESSAGE``."""
        return None
