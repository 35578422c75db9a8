"""The commands the read callback answers itself, with no task: those whose whole
answer is the server's own code (see docs/architecture.md, "What runs where").

Which verbs qualify is decided once per connection (:func:`runnerless_verbs`):
no handler hook that runs while the verb is answered, no subclass override of
the command or of anything it calls, no observer.  :func:`answer_in_callback`
then answers the lines at the head of the input through the sans-I/O session
machine, and hands the first line that needs more to a runner.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from smtpwire.common.lines import LineTooLong
from smtpwire.common.server_rules import CommandRefusal
from smtpwire.common.server_session import START_MAIL_INPUT

from ._auth import AuthMixin
from ._connection import Connection
from .observe import Observer

if TYPE_CHECKING:
    from ._protocol import SessionProtocol

__all__ = ["answer_in_callback", "runnerless_verbs"]

log = logging.getLogger("mail.log")

# The hooks that run while a verb is answered, where not only its own: DATA's
# content reaches handle_DATA_STREAM as it arrives, while handle_DATA runs once
# the message is in (in a runner), so it does not keep DATA from the read callback.
_HOOKS_DURING_COMMAND: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"DATA": frozenset({"DATA_STREAM"})}
)

# Connections share their set (there are at most 16): one each would cost about
# 200 bytes of every idle connection.
_SHARED: dict[frozenset[bytes], frozenset[bytes]] = {}


def runnerless_verbs(
    protocol: SessionProtocol, observer: Observer | None, *, data_rate_checked: bool
) -> frozenset[bytes]:
    """The verbs whose whole answer is the server's own code on this connection
    (not DATA when a minimum data rate is checked: a runner reading the message
    does that)."""
    from ._protocol import SessionProtocol  # noqa: PLC0415 - it imports this module

    cls = type(protocol)
    if (
        observer is not None
        or cls.push is not Connection.push
        or cls._reply is not Connection._reply
        or (cls._command is not SessionProtocol._command and not cls._COMMAND_KEEPS_FAST_PATH)
        or cls._dispatch is not SessionProtocol._dispatch
        or cls.check_helo_needed is not SessionProtocol.check_helo_needed
        or cls.check_auth_needed is not AuthMixin.check_auth_needed
    ):
        return frozenset()
    hooks = protocol._hooks.names.keys()
    verbs = frozenset(
        verb.encode("ascii")
        for verb, method in protocol._RUNNERLESS_COMMANDS.items()
        if protocol._smtp_methods.get(verb) is method
        and hooks.isdisjoint(_HOOKS_DURING_COMMAND.get(verb, {verb}))
        and not (verb == "DATA" and data_rate_checked)
    )
    return _SHARED.setdefault(verbs, verbs)


def answer_in_callback(protocol: SessionProtocol) -> bool:
    """Answer the commands at the head of the input that qualify; True when none
    is left for a runner (a line taken but not answered goes to ``_taken_line``)."""
    verbs = protocol._runnerless_verbs
    # Their INFO log lines are written by the smtp_VERB methods: with INFO on,
    # every command goes to the runner, whose methods write them.
    if not verbs or log.isEnabledFor(logging.INFO):
        return False
    inbound, machine = protocol._inbound, protocol._state_machine
    while not protocol._closing:
        if protocol._writing_paused:
            return False  # the runner waits for the client to read its replies
        line = inbound.next_line()
        if line is None:
            if inbound.closed:
                return False  # the runner ends the session
            protocol._caught_up()
            return True
        if isinstance(line, LineTooLong) or _verb_of(line) not in verbs:
            protocol._taken_line = line
            return False
        try:
            screened = machine.screen(line)
            if isinstance(screened, CommandRefusal):
                protocol._log_refusal(screened)
                reply = screened.reply
            elif screened[0] == "DATA":
                refusal = machine.transaction_refusal() or machine.data(screened[1])
                if refusal is None:
                    protocol._queue_reply(START_MAIL_INPUT)
                    protocol._caught_up()
                    protocol._receive_data_in_callback()
                    return True
                reply = refusal
            else:
                answer = machine.answer(screened)
                assert answer is not None  # noqa: S101 - answer() covers every such verb
                reply = answer
            # A subclass may override how a reply is encoded or queued: its
            # failure must not escape the read callback either.
            if protocol._queue_reply(reply):
                protocol._flush()
        except Exception as error:
            # As in a runner, a failure becomes the command's reply (through
            # handle_exception, which is the application's: in a task).
            protocol._spawn(protocol._resume(error), eager=True)
            return True
        if isinstance(screened, CommandRefusal) and screened.close:
            protocol._close_transport()
    return True


def _verb_of(line: bytes) -> bytes:
    return line.partition(b" ")[0].rstrip(b"\r").upper()
