"""``python -m smtpwire.client``: aiosmtplib's interactive sender (``python -m
aiosmtplib``), prompts and output alike, so a user's habit or script carries over;
``python -m smtpwire.client send ...`` is the scriptable ``smtpwire-send``.

It asks for the server, the sender, the recipients (comma-separated) and the
message (until end of input), then sends it in one connection without STARTTLS
and prints the server's final reply.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._send_cli import main as send_main
from .smtp import SMTP, SMTP_PORT

__all__ = ["main", "prompt_and_send"]

USAGE = (
    "usage: python -m smtpwire.client   (no arguments: prompts for the message to send)\n"
    "       python -m smtpwire.client send --help   (the smtpwire-send command line)"
)
SEND_PROG = "python -m smtpwire.client send"


def prompt_and_send() -> int:
    hostname = input("SMTP server hostname [localhost]: ") or "localhost"
    raw_port = input(f"SMTP server port [{SMTP_PORT}]: ")
    sender = input("From: ")
    raw_recipients = input("To: ")
    port = int(raw_port) if raw_port else SMTP_PORT
    recipients = [recipient.strip() for recipient in raw_recipients.split(",")]
    print("Enter message, end with ^D:")
    lines: list[str] = []
    while True:
        try:
            lines.append(input())
        except EOFError:
            break
    message = "\n".join(lines)
    print(f"Message length (bytes): {len(message.encode('utf-8'))}")
    client = SMTP(hostname=hostname, port=port, start_tls=False)
    _refused, response = client.sendmail_sync(sender, recipients, message)
    print(f"Server response: {response}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["send"]:
        return send_main(arguments[1:], prog=SEND_PROG)
    if arguments:
        print(USAGE, file=sys.stderr)
        return 2
    return prompt_and_send()


if __name__ == "__main__":
    sys.exit(main())
