"""mailpit's own Python client (PyPI: mailpit-api-client) against the web inbox:
what works against mailpit works against smtpwire unchanged."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("mailpit.client.api", reason="mailpit-api-client is not installed")

from mailpit.client.api import API

if TYPE_CHECKING:
    from inbox.conftest import LiveInbox


def deliver(live: LiveInbox, subject: str, to: str = "bob@example.com") -> None:
    message = EmailMessage()
    message["From"] = "Ann <ann@example.com>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    message["Message-ID"] = f"<{subject}@example.com>"
    message["Delivered-To"] = to
    message.set_content(f"Body of {subject}\n")
    message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                           filename="doc.pdf")  # fmt: skip
    with smtplib.SMTP(*live.smtp_address) as client:
        client.send_message(message)


def test_list_read_and_delete(live_inbox: LiveInbox) -> None:
    deliver(live_inbox, "first")
    deliver(live_inbox, "second")
    api = API(live_inbox.url, timeout=10)

    listing = api.get_messages()
    assert (listing.total, listing.unread, listing.count, listing.start) == (2, 2, 2, 0)
    assert [summary.subject for summary in listing.messages] == ["second", "first"]
    newest = listing.messages[0]
    assert newest.from_.address == "ann@example.com"
    assert newest.from_.name == "Ann"
    assert [contact.address for contact in newest.to] == ["bob@example.com"]
    assert newest.attachments == 1
    assert newest.created.tzinfo is not None

    message = api.get_message(newest.id)
    assert message.message_id == "second@example.com"
    assert message.subject == "second"
    assert message.text == "Body of second\n"
    assert message.date.isoformat() == "2026-12-07T10:00:00+00:00"
    [attachment] = message.attachments
    assert (attachment.file_name, attachment.content_type) == ("doc.pdf", "application/pdf")
    assert api.get_message_attachment(newest.id, attachment.part_id) == "%PDF-1.4 fake"

    headers = api.get_message_headers(newest.id)
    assert headers.message_id == ["<second@example.com>"]
    assert headers.delivered_to == ["bob@example.com"]

    api.put_messages([newest.id], "Read", True)
    assert api.get_messages().unread == 1

    api.delete_messages([newest.id])
    remaining = api.get_messages()
    assert [summary.subject for summary in remaining.messages] == ["first"]
    api.delete_messages([])  # the client's way to delete everything
    assert api.get_messages().total == 0
