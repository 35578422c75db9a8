"""The soak's server side: the handler that ``soak.py`` gives smtpwire's command
line (``python3 -m smtpwire.server -c _soak_server.SoakStore STORE``, with this
directory on ``PYTHONPATH``).

Why the command line and not a Controller: the soak restarts servers with
SIGTERM, and the graceful drain (finish the command at hand, 421 to anything
new) is the command line's; a Controller's ``stop()`` closes connections at once.

The handler is the ledger's server half.  Each message it accepts is appended
to STORE as one line, written with a single ``write()`` on an ``O_APPEND``
descriptor and fsync'd *before* the 250 is returned: a message the client was
told 250 about is on disk even if the process dies right after.  Headers of the
message pick injected faults (``X-Soak-Fault: raise``, ``reject`` or
``sleep=SECONDS``).

It also offers AUTH PLAIN (the command line has no authenticator option): a
handler's ``auth_PLAIN`` wins over the server's own, which is public API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import re
from typing import Any

from smtpwire.server.session import AuthResult, LoginPassword

USERNAME = "soak@example.org"
PASSWORD = "soak password"  # noqa: S105 -- a throw-away account on loopback
HEADERS_END = b"\r\n\r\n"
FIELD = re.compile(
    rb"^(X-Soak-(?:Id|Attempt|Fault)): *([^\r\n]*)\r?$", re.MULTILINE | re.IGNORECASE
)


class HandlerFault(RuntimeError):
    """Raised on purpose by the handler (``X-Soak-Fault: raise``)."""


def soak_fields(content: bytes) -> dict[str, str]:
    """The X-Soak-* header fields of a message (looked for in its header only)."""
    header = content.split(HEADERS_END, 1)[0]
    return {
        name.decode("ascii").lower(): value.decode("ascii", "replace").strip()
        for name, value in FIELD.findall(header)
    }


def record(fields: dict[str, str], envelope: Any, session: Any) -> bytes:
    """One line of the store: id, attempt, TLS, authenticated, this process.

    smtp-source's messages carry no X-Soak-Id; their envelope identifies them
    (a sender per smtp-source run, ``-N`` numbers each recipient)."""
    message_id = fields.get("x-soak-id")
    if message_id is None:
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        message_id = f"src:{envelope.mail_from}:{rcpt}"
    attempt = fields.get("x-soak-attempt", "1")
    tls = int(session.ssl is not None)
    authenticated = int(bool(session.authenticated))
    return f"{message_id}\t{attempt}\t{tls}\t{authenticated}\t{os.getpid()}\n".encode()


class SoakStore:
    """Stores each accepted message's identity, fsync'd, before its 250."""

    def __init__(self, path: str) -> None:
        # Opened once, before the server serves: part of the process's baseline
        # file descriptors, which soak.py compares with the count at the end.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @classmethod
    def from_cli(cls, parser: argparse.ArgumentParser, *args: str) -> SoakStore:
        if len(args) != 1:
            parser.error("SoakStore takes one argument: the store file")
        return cls(args[0])

    def _append(self, line: bytes) -> None:
        # One write() of a short line on O_APPEND: lines of concurrent writers
        # never interleave.  fsync so that "250 received" implies "on disk".
        os.write(self._fd, line)
        os.fsync(self._fd)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or b""
        fields = soak_fields(content)
        fault = fields.get("x-soak-fault", "")
        if fault == "raise":
            raise HandlerFault("injected by the soak")  # modern: 451 4.3.0, else 500
        if fault == "reject":
            return "550 5.7.1 Refused by the soak's handler"
        if fault.startswith("sleep="):
            # A slow handler: the delay is the fault itself, not synchronisation.
            await asyncio.sleep(float(fault.partition("=")[2]))
        # In a thread: fsync may take milliseconds, the event loop serves others.
        await asyncio.to_thread(self._append, record(fields, envelope, session))
        return "250 OK stored"

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:
        """RFC 4616 PLAIN with or without an initial response."""
        if len(args) > 1 and args[1] != "=":
            encoded: Any = args[1].encode("ascii", "replace")
        else:
            encoded = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(encoded, bytes):  # aborted: the server has answered 501
                return AuthResult(success=False, handled=True)
            # challenge_auth has decoded the answer already.
            return self._check(encoded)
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            return AuthResult(success=False, handled=False)
        return self._check(decoded)

    @staticmethod
    def _check(decoded: bytes) -> AuthResult:
        parts = decoded.split(b"\x00")
        if len(parts) == 3 and parts[1:] == [USERNAME.encode(), PASSWORD.encode()]:
            return AuthResult(success=True, auth_data=LoginPassword(parts[1], parts[2]))
        return AuthResult(success=False, handled=False)
