"""One message through one connection: connect (and TLS), check the extensions
the options require, log in, send, quit; each step's failure becomes a
:class:`SendFailure` with that step's exit status."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from ._send_errors import (
    ExitStatus,
    SendFailure,
    auth_failure,
    connect_failure,
    refused_recipients,
    send_failure,
)
from ._send_message import build_message, raw_message
from ._send_options import AUTO, Content, Credentials, SendOptions, Transport
from ._send_output import Output
from ._send_transcript import INFO, TranscriptLMTP, TranscriptSMTP, describe_tls
from .errors import SMTPException, SMTPHeloError
from .pool import SMTPPool
from .response import SMTPResponse
from .smtp import SMTP

__all__ = [
    "client_factory",
    "client_options",
    "mail_options",
    "send_one",
    "send_with",
    "server_address",
]


def client_options(transport: Transport, credentials: Credentials | None) -> dict[str, Any]:
    """The SMTP constructor's keywords for these options (the pool's too)."""
    options: dict[str, Any] = {
        "hostname": transport.host,
        "port": transport.port,
        "local_hostname": transport.ehlo,
        "timeout": transport.timeout,
        "use_tls": transport.tls == "tls",
        # auto: upgrade when offered, as the library does; starttls: required.
        "start_tls": {"auto": None, "starttls": True}.get(transport.tls, False),
        "validate_certs": not transport.insecure,
        "cert_bundle": transport.cacert,
        "client_cert": transport.client_cert,
        "client_key": transport.client_key,
        "chunking": transport.bdat,
    }
    if credentials is not None and credentials.mechanism == "XOAUTH2":
        token = credentials.password

        async def token_generator() -> str:
            return token

        options.update(username=credentials.user, oauth_token_generator=token_generator)
    elif credentials is not None:
        options.update(username=credentials.user, password=credentials.password)
    return options


def client_factory(transport: Transport, output: Output) -> Callable[..., SMTP]:
    """The client for these options, to be called with SMTP's keywords: LMTP or
    SMTP, writing its transcript to ``output``, blind to PIPELINING with
    --no-pipelining."""
    cls = TranscriptLMTP if transport.lmtp else TranscriptSMTP
    hide = frozenset({"pipelining"}) if transport.pipelining is False else frozenset()
    return functools.partial(cls, output=output, hide=hide)


def mail_options(transport: Transport, content: Content) -> list[str]:
    # A raw message's non-ASCII addresses need SMTPUTF8 asked for (send_message
    # finds that out by itself for a built one).
    addresses = [content.sender, *content.recipients]
    needs_utf8 = content.raw is not None and not all(a.isascii() for a in addresses)
    return ["SMTPUTF8"] if transport.smtputf8 or needs_utf8 else []


async def send_one(options: SendOptions, output: Output) -> ExitStatus:
    transport = options.transport
    # Credentials are used by hand after connecting (to honour --auth MECHANISM),
    # not given to the constructor, which would log in by its own choice.
    client = client_factory(transport, output)(**client_options(transport, None))
    try:
        await _connect(client, transport, output)
        _require_extensions(client, transport)
        if options.credentials is not None:
            await _authenticate(client, options.credentials)
        try:
            refused, reply = await send_with(client, options)
        except (SMTPException, OSError, ValueError) as error:
            raise send_failure(error) from None
    finally:
        await _quit(client)
    if refused:
        raise refused_recipients(refused)
    output.result(f"sent: {reply}" if reply else "sent")
    return ExitStatus.OK


async def send_with(
    client: SMTP | SMTPPool, options: SendOptions
) -> tuple[dict[str, SMTPResponse], str]:
    """One message through a client or a pool (the same two methods)."""
    content = options.content
    extra = mail_options(options.transport, content)
    if content.raw is not None:
        return await client.sendmail(
            content.sender, content.recipients, raw_message(content), mail_options=extra
        )
    return await client.send_message(
        build_message(content), sender=content.sender, recipients=content.recipients,
        mail_options=extra,
    )  # fmt: skip


async def _connect(client: SMTP, transport: Transport, output: Output) -> None:
    where = server_address(transport)
    output.wire(f"{INFO}Connecting to {where}")
    try:
        await client.connect()
        if client.is_ehlo_or_helo_needed:  # --no-tls: connect() sent no EHLO
            await _greet(client)
    except (SMTPException, OSError, ValueError) as error:
        raise connect_failure(error, where) from None
    if transport.tls == "tls":
        output.wire(INFO + describe_tls(client))


async def _greet(client: SMTP) -> None:
    try:
        await client.ehlo()
    except SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


def _require_extensions(client: SMTP, transport: Transport) -> None:
    required = {
        "PIPELINING": transport.pipelining is True,
        "CHUNKING": transport.bdat,
        "SMTPUTF8": transport.smtputf8,
    }
    for extension, wanted in required.items():
        if wanted and not client.supports_extension(extension):
            raise SendFailure(ExitStatus.UNSUPPORTED, f"the server does not offer {extension}")


async def _authenticate(client: SMTP, credentials: Credentials) -> None:
    user, password, mechanism = credentials.user, credentials.password, credentials.mechanism
    try:
        if mechanism == AUTO:
            await client.login(user, password)
            return
        offered = [method.upper() for method in client.server_auth_methods]
        if mechanism not in offered:
            listed = ", ".join(offered) or "none"
            raise SendFailure(
                ExitStatus.AUTHENTICATION,
                f"the server does not offer AUTH {mechanism} (offered: {listed})",
            )
        methods = {
            "PLAIN": client.auth_plain,
            "LOGIN": client.auth_login,
            "CRAM-MD5": client.auth_crammd5,
            "XOAUTH2": client.auth_xoauth2,
        }
        await methods[mechanism](user, password)
    except (SMTPException, OSError, ValueError) as error:
        raise auth_failure(error) from None


async def _quit(client: SMTP) -> None:
    """QUIT if still connected; its failure changes nothing about the result."""
    with contextlib.suppress(SMTPException, OSError):
        if client.is_connected:
            await client.quit()
    client.close()


def server_address(transport: Transport) -> str:
    host = f"[{transport.host}]" if ":" in transport.host else transport.host
    return f"{host}:{transport.port}"
