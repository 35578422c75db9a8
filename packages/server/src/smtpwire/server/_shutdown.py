"""Stopping the command line's server gracefully (SIGTERM, SIGINT).

1. Stop accepting: the listening socket is closed at once, so a load balancer or
   a sending MTA's next attempt goes elsewhere.
2. Drain: a session with no transaction in progress gets ``421 4.3.2 Service
   shutting down, closing`` and is closed.  A session with one (MAIL accepted, a
   message being received or delivered, BDAT chunks coming) goes on: the client
   may still send DATA and its message; once the transaction ends and its final
   reply is sent, the session gets that 421 too and is closed, so a command
   that would begin a new transaction never runs.  QUIT is answered 221.  (See
   ``_cli_serving.CliSMTP``.)
3. After the grace period (``--shutdown-grace``), the sessions left get
   that 421 and are closed, and their handlers' tasks are cancelled.

A second SIGTERM or SIGINT during the drain means "stop now": step 3 at once,
whatever is left of the grace period (``_cli_serving.Stopping`` says so in one
WARNING line); the process then exits as after any stop, with status 0.

A message is stored whole or refused, never half: a handler cut off at step 3
(or by a second signal) is cancelled at an ``await``, and its client gets 421, a
temporary failure, so the sender keeps the message and sends it again later.  (A
handler that hands its work to a thread cannot be stopped there; what that thread
finishes may then be stored although the client was told 421: a duplicate later,
never a loss.)
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._cli_serving import Connections

__all__ = ["CLOSE_TIMEOUT", "ENDED", "GRACE_OVER", "SHUTTING_DOWN", "STOP_NOW", "shut_down"]

log = logging.getLogger("mail.log")

SHUTTING_DOWN = "421 4.3.2 Service shutting down, closing"

#: How a drain ends (``_cli_serving.Drain.wait``): every session has ended, the
#: grace period is over, or a second signal said to stop now.
ENDED = "ended"
GRACE_OVER = "grace over"
STOP_NOW = "stop now"

#: The bound on each wait after the grace period: for the cut-off sessions'
#: connections to close, and for their tasks to end once cancelled.
CLOSE_TIMEOUT = 5.0


async def shut_down(server: asyncio.AbstractServer, connections: Connections, grace: float) -> None:
    server.close()  # accept no more
    drain = connections.drain
    drain.begin()
    outcome = await drain.wait(grace)
    if outcome != ENDED:
        left = list(drain.live)
        if outcome == GRACE_OVER:  # (a stop now is the signal handler's line)
            log.warning(
                "%d session(s) still busy %g s after the shutdown began: answering 421, closing",
                len(left),
                grace,
            )
        for session in left:
            # The reply first, then the cancel: once the handler's task is cancelled
            # its session may close without a word.
            session._say_and_close(SHUTTING_DOWN)
        tasks = [session._handler_coroutine for session in left]
        running = [task for task in tasks if task is not None and not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=CLOSE_TIMEOUT)
    for transport in connections.transports():
        transport.close()  # what is not a CliSMTP (a 421 for too many connections)
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
    for transport in connections.transports():
        # Looked up, not isinstance(asyncio.WriteTransport): uvloop's transports
        # have the methods without deriving from asyncio's classes.
        abort = getattr(transport, "abort", None)
        if abort is not None and not transport.is_closing():
            abort()
    # On the caller's loop nothing else would end the sessions' tasks: end them here.
    tasks = [session._handler_coroutine for session in list(connections.open)]
    running = [task for task in tasks if task is not None and not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=CLOSE_TIMEOUT)
