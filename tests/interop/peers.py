"""What the interop tests share: finding the real peers, a handler recording what
reached smtpwire.server, and running a peer with bounded time.

The peers come from Debian packages (swaks, libnet-ssleay-perl for swaks' TLS,
postfix for smtp-source and smtp-sink).  Where one is missing the tests needing it
are skipped, saying which package to install; under CI (the ``CI`` environment
variable set) they fail instead, because CI installs them and a missing peer there
is a broken CI machine, not a reason to test less.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from smtpwire.server.smtp import AuthResult, LoginPassword

WAIT = 10.0  # seconds: a peer's own network timeout, and the bound on every wait for one
RUN_TIMEOUT = 60.0  # seconds: the most a peer process may run before it is killed

SERVER_NAME = "smtpwire.test"
CLIENT_NAME = "client.example"


def require_tool(path: str, package: str, *, works: bool = True, why: str = "") -> str:
    """``path`` when it is an executable file (and ``works``), else skip the test
    (fail it under CI) naming the Debian ``package`` that provides it."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        problem = f"{path} not found"
    elif not works:
        problem = why or f"{path} does not work here"
    else:
        return path
    reason = f"{problem}: install the Debian package {package}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: CI must install it)", pytrace=False)
    pytest.skip(reason)


def run_peer(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Runs a peer to its end without standard input; killed (and reaped) by
    ``subprocess.run`` if it outlives RUN_TIMEOUT."""
    return subprocess.run(  # noqa: S603 - a fixed program with arguments the test chose
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def transcript(result: subprocess.CompletedProcess[str]) -> str:
    """A peer's exit status and output, for assertion messages."""
    return f"exit status {result.returncode}\n{result.stdout}\n{result.stderr}"


def which_or(name: str, default: str) -> str:
    """Where ``name`` is on PATH (sbin included), else the Debian location."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    return shutil.which(name, path=search) or default


@dataclass(frozen=True)
class Received:
    """One message as smtpwire.server handed it to the handler, with what the
    session knew then."""

    helo: str | None
    mail_from: str | None
    mail_options: tuple[str, ...]
    rcpt_tos: tuple[str, ...]
    content: bytes
    smtp_utf8: bool
    tls: bool
    login: bytes | None
    session_id: int


class Inbox:
    """A handler keeping every delivered message.  The sessions are kept as well,
    so ``session_id`` (their ``id``) tells sessions apart for the whole test."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._sessions: dict[int, Any] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        assert isinstance(envelope.original_content, bytes)
        self._sessions[id(session)] = session
        # auth_data: a LoginPassword after PLAIN or LOGIN, the user name after CRAM-MD5.
        data = session.auth_data
        login = getattr(data, "login", data) if session.authenticated else None
        self.messages.append(
            Received(
                helo=session.host_name,
                mail_from=envelope.mail_from,
                mail_options=tuple(envelope.mail_options),
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=envelope.original_content,
                smtp_utf8=bool(envelope.smtp_utf8),
                tls=session.ssl is not None,
                login=login,
                session_id=id(session),
            )
        )
        return "250 OK"

    @property
    def sessions(self) -> int:
        """How many sessions delivered at least one message."""
        return len(self._sessions)


# -- one account, for the AUTH tests -----------------------------------------------------

LOGIN = "anne"
PASSWORD = "s3cr3t-Pa55"  # noqa: S105 - a test credential


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    if auth_data == LoginPassword(LOGIN.encode(), PASSWORD.encode()):
        return AuthResult(success=True, auth_data=auth_data)
    # handled=False: the server sends the 535 (aiosmtpd's default, handled=True,
    # would mean the authenticator already replied, and the client would wait).
    return AuthResult(success=False, handled=False)


def starttls_then_auth(context: ssl.SSLContext, **options: Any) -> dict[str, Any]:
    """Server options: STARTTLS required, then AUTH with :func:`authenticator`."""
    return {
        "tls_context": context,
        "require_starttls": True,
        "auth_required": True,
        "authenticator": authenticator,
        **options,
    }
