"""``send()``: connect, send one message, quit — aiosmtplib's one-call API."""

from __future__ import annotations

import email.message
import socket
import ssl
from collections.abc import Sequence

from .response import SMTPResponse
from .smtp import DEFAULT_TIMEOUT, SMTP
from .typing import SMTPTokenGenerator, SocketPathType

__all__ = ["send"]


async def send(
    message: email.message.EmailMessage | email.message.Message | str | bytes,
    /,
    *,
    sender: str | None = None,
    recipients: str | Sequence[str] | None = None,
    mail_options: Sequence[str] | None = None,
    rcpt_options: Sequence[str] | None = None,
    hostname: str | None = "localhost",
    port: int | None = None,
    username: str | bytes | None = None,
    password: str | bytes | None = None,
    oauth_token_generator: SMTPTokenGenerator | None = None,
    local_hostname: str | None = None,
    source_address: tuple[str, int] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    use_tls: bool = False,
    start_tls: bool | None = None,
    validate_certs: bool = True,
    client_cert: str | None = None,
    client_key: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    cert_bundle: str | None = None,
    socket_path: SocketPathType | None = None,
    sock: socket.socket | None = None,
) -> tuple[dict[str, SMTPResponse], str]:
    """Send ``message`` (an email.message.Message, or str/bytes with ``sender`` and
    ``recipients``); returns the refused recipients and the server's final reply."""
    if isinstance(message, str | bytes):
        if not recipients:
            raise ValueError("Recipients must be provided with raw messages.")
        if not sender:
            raise ValueError("Sender must be provided with raw messages.")
    client = SMTP(
        hostname=hostname, port=port, username=username, password=password,
        oauth_token_generator=oauth_token_generator, local_hostname=local_hostname,
        source_address=source_address, timeout=timeout, use_tls=use_tls, start_tls=start_tls,
        validate_certs=validate_certs, client_cert=client_cert, client_key=client_key,
        tls_context=tls_context, cert_bundle=cert_bundle, socket_path=socket_path, sock=sock,
    )  # fmt: skip
    async with client:
        if isinstance(message, str | bytes):
            return await client.sendmail(
                str(sender), recipients or [], message,
                mail_options=mail_options, rcpt_options=rcpt_options,
            )  # fmt: skip
        return await client.send_message(
            message, sender=sender, recipients=recipients,
            mail_options=mail_options, rcpt_options=rcpt_options,
        )  # fmt: skip
