"""What ``smtpwire-send`` sends: a MIME message built from the options, or the
raw bytes given with ``--data``.

A built message is made afresh for every send, so each of ``--count`` messages
has its own Date and Message-ID (a receiver, or a test, can tell them apart).
"""

from __future__ import annotations

import mimetypes
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ._send_options import Content

__all__ = ["build_message", "raw_message"]

MAILER = "smtpwire-send"


def build_message(content: Content) -> EmailMessage:
    message = EmailMessage()
    message["From"] = content.sender
    if content.to:
        message["To"] = ", ".join(content.to)
    if content.cc:
        message["Cc"] = ", ".join(content.cc)
    # No Bcc header: those recipients are in the envelope only.
    message["Subject"] = content.subject
    message["Date"] = formatdate(localtime=True)
    # The domain is given: make_msgid() would otherwise ask the resolver for the
    # host's FQDN, once per message.
    message["Message-ID"] = make_msgid(domain=_domain(content.sender))
    message["X-Mailer"] = MAILER
    for name, value in content.headers:
        # A --header replaces a generated header of that name, as with swaks.
        del message[name]
        message[name] = value
    message.set_content(content.body if content.body is not None else f"Sent by {MAILER}.\n")
    if content.html is not None:
        message.add_alternative(content.html, subtype="html")
    for attachment in content.attachments:
        maintype, subtype = _mime_type(attachment.filename)
        message.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return message


def raw_message(content: Content) -> bytes:
    """The ``--data`` bytes, with any ``--header`` lines put in front."""
    assert content.raw is not None  # noqa: S101 - the caller checked
    extra = b"".join(f"{name}: {value}\r\n".encode() for name, value in content.headers)
    return extra + content.raw


def _domain(address: str) -> str:
    domain = address.rpartition("@")[2].strip(" >")
    return domain if domain and "@" in address else "smtpwire-send.invalid"


def _mime_type(filename: str) -> tuple[str, str]:
    guessed, encoding = mimetypes.guess_type(filename)
    if guessed is None or encoding is not None:
        # Unknown, or compressed (a .tar.gz is not a tar to a mail reader).
        return "application", "octet-stream"
    maintype, _, subtype = guessed.partition("/")
    return maintype, subtype
