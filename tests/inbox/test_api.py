"""The web inbox's HTTP API through a real HTTP client (aiohttp), against an inbox
that received its mail over real SMTP (smtplib and smtpwire.client)."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import smtplib
import time
import tracemalloc
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from inbox.conftest import LiveInbox
from smtpwire.client import send
from smtpwire.client.pool import SMTPPool
from smtpwire.server.smtp import SMTP

MiB = 1024 * 1024


def mail(
    subject: str = "Hello",
    *,
    sender: str = "Ann Example <ann@example.com>",
    to: str = "bob@example.com",
    text: str = "Hi Bob,\nthe report is attached.\n",
    html: str | None = "<p>Hi <b>Bob</b></p>",
    attachment: bytes | None = b"\x00\x01binary report",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    if attachment is not None:
        message.add_attachment(
            attachment, maintype="application", subtype="pdf", filename="report.pdf"
        )
    return message


def deliver(live: LiveInbox, message: EmailMessage, rcpts: list[str] | None = None) -> None:
    with smtplib.SMTP(*live.smtp_address) as client:
        client.send_message(message, to_addrs=rcpts)


async def get_json(
    session: aiohttp.ClientSession, url: str, status: int = 200, **kwargs: Any
) -> Any:
    async with session.get(url, **kwargs) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def test_list_read_and_raw(live_inbox: LiveInbox) -> None:
    await asyncio.to_thread(deliver, live_inbox, mail("First"), ["bob@example.com"])
    await asyncio.to_thread(
        deliver, live_inbox, mail("Second"), ["bob@example.com", "hidden@example.com"]
    )
    base = live_inbox.url
    async with aiohttp.ClientSession() as session:
        listing = await get_json(session, f"{base}/api/v1/messages")
        assert {key: listing[key] for key in ("total", "unread", "count", "start")} == {
            "total": 2,
            "unread": 2,
            "count": 2,
            "start": 0,
        }
        assert listing["messages_count"] == 2
        assert listing["tags"] == []
        newest, oldest = listing["messages"]
        assert [newest["Subject"], oldest["Subject"]] == ["Second", "First"]
        assert len(newest["ID"]) == 22
        assert newest["From"] == {"Name": "Ann Example", "Address": "ann@example.com"}
        assert newest["To"] == [{"Name": "", "Address": "bob@example.com"}]
        assert newest["Bcc"] == [{"Name": "", "Address": "hidden@example.com"}]
        assert newest["MessageID"] == "Second@example.com"
        assert newest["Attachments"] == 1
        assert newest["Read"] is False
        assert newest["Snippet"].startswith("Hi Bob, the report")
        assert newest["Created"].endswith("Z")

        page = await get_json(session, f"{base}/api/v1/messages?start=1&limit=1")
        assert [m["Subject"] for m in page["messages"]] == ["First"]
        assert page["start"] == 1

        message = await get_json(session, f"{base}/api/v1/message/{newest['ID']}")
        assert message["Text"] == "Hi Bob,\nthe report is attached.\n"
        assert message["HTML"].strip() == "<p>Hi <b>Bob</b></p>"
        [attachment] = message["Attachments"]
        assert attachment["FileName"] == "report.pdf"
        assert attachment["ContentType"] == "application/pdf"
        assert attachment["Size"] == len(b"\x00\x01binary report")
        assert message["Inline"] == []
        # Opening a message marks it read, as in mailpit.
        listing = await get_json(session, f"{base}/api/v1/messages")
        assert listing["unread"] == 1

        async with session.get(
            f"{base}/api/v1/message/{newest['ID']}/part/{attachment['PartID']}"
        ) as response:
            assert response.status == 200
            assert response.content_type == "application/pdf"
            assert await response.read() == b"\x00\x01binary report"
            assert "report.pdf" in response.headers["Content-Disposition"]

        headers = await get_json(session, f"{base}/api/v1/message/{newest['ID']}/headers")
        assert headers["Subject"] == ["Second"]
        assert headers["Message-Id"] == ["<Second@example.com>"]

        async with session.get(f"{base}/api/v1/message/{newest['ID']}/raw") as response:
            raw = await response.read()
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert response.headers["Content-Security-Policy"].startswith("sandbox")
        assert b"Subject: Second" in raw
        async with session.get(f"{base}/view/{newest['ID']}.raw") as response:
            assert await response.read() == raw
        async with session.get(f"{base}/api/v1/message/latest/raw?dl=1") as response:
            assert await response.read() == raw
            assert f"{newest['ID']}.eml" in response.headers["Content-Disposition"]


async def test_own_endpoints_session_and_html(live_inbox: LiveInbox) -> None:
    await asyncio.to_thread(deliver, live_inbox, mail("Html"), None)
    async with aiohttp.ClientSession() as session:
        [summary] = (await get_json(session, f"{live_inbox.url}/api/v1/messages"))["messages"]
        facts = await get_json(
            session, f"{live_inbox.url}/api/smtpwire/message/{summary['ID']}/session"
        )
        assert facts["Peer"][0] == "127.0.0.1"
        assert facts["HELO"]
        assert facts["TLS"]["On"] is False
        assert facts["AuthLogin"] is None
        assert facts["MailFrom"] == "ann@example.com"
        assert facts["RcptTo"] == ["bob@example.com"]
        assert facts["Received"].endswith("Z")
        transcript = facts["Transcript"]
        assert transcript[0].startswith("S: 220 ")
        assert "c: data" in [line.lower() for line in transcript]
        assert transcript[-1].startswith("C: <message, ")

        url = f"{live_inbox.url}/api/smtpwire/message/{summary['ID']}/html"
        async with session.get(url) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            policy = response.headers["Content-Security-Policy"]
            assert policy.startswith("sandbox;")
            assert "default-src 'none'" in policy
            assert "<b>Bob</b>" in await response.text()
        info = await get_json(session, f"{live_inbox.url}/api/smtpwire/info")
        assert info["Messages"] == 1
        assert info["Database"] == "memory"


async def test_smtputf8_and_8bitmime(live_inbox: LiveInbox) -> None:
    raw = (
        "From: Jörg <jörg@bücher.example>\r\n"
        "To: Zoë <zoë@example.com>\r\n"
        "Subject: Grüße\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Schöne Grüße aus Köln\r\n"
    ).encode()

    def deliver_utf8() -> None:
        with smtplib.SMTP(*live_inbox.smtp_address) as client:
            client.ehlo()
            assert client.has_extn("smtputf8")
            client.sendmail(
                "jörg@bücher.example",
                ["zoë@example.com"],
                raw,
                mail_options=["SMTPUTF8", "BODY=8BITMIME"],
            )

    await asyncio.to_thread(deliver_utf8)
    async with aiohttp.ClientSession() as session:
        [summary] = (await get_json(session, f"{live_inbox.url}/api/v1/messages"))["messages"]
        assert summary["Subject"] == "Grüße"
        assert summary["From"]["Address"] == "jörg@bücher.example"
        assert summary["To"] == [{"Name": "Zoë", "Address": "zoë@example.com"}]
        message = await get_json(session, f"{live_inbox.url}/api/v1/message/{summary['ID']}")
        assert message["Text"] == "Schöne Grüße aus Köln\n"
        found = await get_json(session, f"{live_inbox.url}/api/v1/search?query=to:zoë@example.com")
        assert found["messages_count"] == 1
        facts = await get_json(
            session, f"{live_inbox.url}/api/smtpwire/message/{summary['ID']}/session"
        )
        assert "SMTPUTF8" in facts["MailOptions"]
        assert "BODY=8BITMIME" in facts["MailOptions"]
        async with session.get(f"{live_inbox.url}/api/v1/message/{summary['ID']}/raw") as response:
            assert await response.read() == raw


async def test_search_delete_and_read_status(live_inbox: LiveInbox) -> None:
    for subject, sender, to in [
        ("Invoice 1", "billing@shop.example", "ann@example.com"),
        ("Invoice 2", "billing@shop.example", "bob@example.com"),
        ("Party", "carol@friends.example", "ann@example.com"),
    ]:
        message = mail(subject, sender=sender, to=to, attachment=None)
        await asyncio.to_thread(deliver, live_inbox, message, None)
    base = live_inbox.url
    async with aiohttp.ClientSession() as session:

        async def subjects(query: str) -> list[str]:
            found = await get_json(session, f"{base}/api/v1/search?query={query}")
            return [m["Subject"] for m in found["messages"]]

        assert await subjects("from:billing") == ["Invoice 2", "Invoice 1"]
        assert await subjects("to:ann@example.com") == ["Party", "Invoice 1"]
        assert await subjects("subject:party") == ["Party"]
        assert await subjects("invoice -to:bob") == ["Invoice 1"]
        assert await subjects('"invoice 2"') == ["Invoice 2"]
        assert await subjects("nothing-like-this") == []
        found = await get_json(session, f"{base}/api/v1/search?query=from:billing&limit=1")
        assert (found["count"], found["messages_count"], found["total"]) == (1, 2, 3)

        async with session.get(f"{base}/api/v1/search?query=") as response:
            assert response.status == 400
            assert "Error" in await response.json()

        ids = [m["ID"] for m in (await get_json(session, f"{base}/api/v1/messages"))["messages"]]
        async with session.put(
            f"{base}/api/v1/messages", json={"IDs": ids[:2], "Read": True}
        ) as response:
            assert response.status == 200
            assert await response.text() == "ok"
        assert await subjects("is:unread") == ["Invoice 1"]
        async with session.put(f"{base}/api/v1/messages", json={"Read": False}) as response:
            assert response.status == 200
        assert (await get_json(session, f"{base}/api/v1/messages"))["unread"] == 3

        async with session.delete(f"{base}/api/v1/search?query=from:billing") as response:
            assert response.status == 200
        assert await subjects("invoice") == []
        async with session.delete(f"{base}/api/v1/messages", json={"IDs": [ids[0]]}) as response:
            assert response.status == 200
        assert (await get_json(session, f"{base}/api/v1/messages"))["total"] == 0


async def test_free_text_search_reads_html_bodies_and_file_names(live_inbox: LiveInbox) -> None:
    """As mailpit's search text: the HTML body without its tags, and the names of
    the attachments, are searched as well as the text body."""
    html_only = EmailMessage()
    html_only["From"] = "news@shop.example"
    html_only["To"] = "bob@example.com"
    html_only["Subject"] = "Newsletter"
    html_only.set_content(
        "<html><head><style>p { color: teal; }</style></head><body>"
        '<p>Our <b>spring</b> sale: <a href="https://shop.example/">caf&eacute; deals</a></p>'
        "<script>var hidden = 'scriptword';</script></body></html>",
        subtype="html",
    )
    attached = mail("Figures", html=None, text="See the file.\n", attachment=None)
    attached.add_attachment(
        b"1,2,3", maintype="text", subtype="csv", filename="Quarterly-Figures.csv"
    )
    attached.add_attachment(b"GIF89a", maintype="image", subtype="gif", filename="chart.gif")
    for message in (html_only, attached, mail("Plain", html=None, attachment=None)):
        await asyncio.to_thread(deliver, live_inbox, message, None)
    async with aiohttp.ClientSession() as session:

        async def subjects(query: str) -> list[str]:
            found = await get_json(
                session, f"{live_inbox.url}/api/v1/search", params={"query": query}
            )
            return [m["Subject"] for m in found["messages"]]

        # Words of an HTML-only message, across tags, entities decoded.
        assert await subjects("spring") == ["Newsletter"]
        assert await subjects('"our spring sale"') == ["Newsletter"]
        assert await subjects("café") == ["Newsletter"]
        # Markup, style sheets and scripts are not text.
        assert await subjects("color") == []
        assert await subjects("scriptword") == []
        assert await subjects("href") == []
        # Attachment file names.
        assert await subjects("quarterly-figures") == ["Figures"]
        assert await subjects("chart.gif") == ["Figures"]
        assert await subjects("-chart") == ["Plain", "Newsletter"]


async def test_message_id_term_matches_only_the_message_id(live_inbox: LiveInbox) -> None:
    """``message-id:`` looks at the Message-ID and nothing else, as in mailpit."""
    original = mail("Original", attachment=None)  # Message-ID: <Original@example.com>
    reply = mail("Re: Original", text="Answering original@example.com here.\n", html=None,
                 attachment=None)  # fmt: skip
    reply.replace_header("Message-ID", "<reply-1@example.com>")
    reply["In-Reply-To"] = "<Original@example.com>"
    for message in (original, reply):
        await asyncio.to_thread(deliver, live_inbox, message, None)
    async with aiohttp.ClientSession() as session:

        async def subjects(query: str) -> list[str]:
            found = await get_json(
                session, f"{live_inbox.url}/api/v1/search", params={"query": query}
            )
            return [m["Subject"] for m in found["messages"]]

        assert await subjects("original@example.com") == ["Re: Original", "Original"]
        assert await subjects("message-id:original@example.com") == ["Original"]
        assert await subjects("message-id:<Original@example.com>") == ["Original"]
        assert await subjects("message-id:reply-1") == ["Re: Original"]
        assert await subjects("-message-id:original") == ["Re: Original"]
        assert await subjects("message-id:answering") == []


async def test_mark_read_by_search(live_inbox: LiveInbox) -> None:
    """``PUT /api/v1/messages`` with ``Search`` (mailpit's API v1): the messages that
    the search finds, and only those, are marked; as JSON or as a form."""
    for subject, sender in [
        ("Invoice 1", "billing@shop.example"),
        ("Invoice 2", "billing@shop.example"),
        ("Party", "carol@friends.example"),
    ]:
        message = mail(subject, sender=sender, attachment=None)
        await asyncio.to_thread(deliver, live_inbox, message, None)
    base = live_inbox.url
    async with aiohttp.ClientSession() as session:

        async def unread() -> list[str]:
            found = await get_json(session, f"{base}/api/v1/search?query=is:unread")
            return [m["Subject"] for m in found["messages"]]

        async def put(status: int = 200, **kwargs: Any) -> None:
            async with session.put(f"{base}/api/v1/messages", **kwargs) as response:
                assert response.status == status, await response.text()
                if status == 200:
                    assert await response.text() == "ok"

        await put(json={"Search": "from:billing", "Read": True})
        assert await unread() == ["Party"]
        await put(json={"search": "invoice 2", "read": False})  # field names ignore case
        assert await unread() == ["Party", "Invoice 2"]
        await put(data={"Search": "subject:party", "Read": "true"})  # a form body
        assert await unread() == ["Invoice 2"]
        await put(json={"Search": "nothing-matches", "Read": True})
        assert await unread() == ["Invoice 2"]

        ids = [m["ID"] for m in (await get_json(session, f"{base}/api/v1/messages"))["messages"]]
        await put(400, json={"IDs": ids[:1], "Search": "invoice", "Read": True})
        await put(400, json={"Search": 5, "Read": True})
        assert await unread() == ["Invoice 2"]  # the refused requests changed nothing


async def test_delete_all(live_inbox: LiveInbox) -> None:
    for subject in ("a", "b"):
        await asyncio.to_thread(deliver, live_inbox, mail(subject), None)
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{live_inbox.url}/api/v1/messages") as response:
            assert response.status == 200
        assert (await get_json(session, f"{live_inbox.url}/api/v1/messages"))["total"] == 0


async def test_bad_input(live_inbox: LiveInbox) -> None:
    await asyncio.to_thread(deliver, live_inbox, mail("x"), None)
    base = live_inbox.url
    async with aiohttp.ClientSession() as session:
        for path in (
            "/api/v1/message/NoSuchMessage",
            "/api/v1/message/NoSuchMessage/raw",
            "/api/v1/message/NoSuchMessage/headers",
            "/api/v1/message/NoSuchMessage/part/1",
            "/api/v1/message/latest/part/9.9",
            "/api/smtpwire/message/NoSuchMessage/session",
            "/api/smtpwire/message/NoSuchMessage/html",
            "/view/NoSuchMessage.raw",
            "/api/v1/no-such-endpoint",
        ):
            body = await get_json(session, base + path, status=404)
            assert body["Error"], path
        for path in (
            "/api/v1/messages?limit=ten",
            "/api/v1/messages?start=-1",
            "/api/v1/search?query=x&start=x",
            # Digits that str.isdigit() accepts but are no ASCII number (int() takes
            # some, refuses others): refused alike, never a 500.
            "/api/v1/messages?limit=%C2%B2",  # ²
            "/api/v1/messages?start=%D9%A3",  # Arabic-Indic 3
            "/api/v1/search?query=x&limit=%C2%B2",
            "/api/v1/search?query=x&start=%EF%BC%91",  # fullwidth 1
            # Beyond a signed 64-bit integer (SQLite's INTEGER, mailpit's int).
            "/api/v1/messages?limit=99999999999999999999",
            "/api/v1/messages?start=9223372036854775808",
            "/api/v1/search?query=x&limit=99999999999999999999",
            "/api/v1/search?query=x&start=99999999999999999999",
            f"/api/v1/messages?limit={'9' * 5000}",  # past int()'s digit limit
            "/api/smtpwire/wait?count=none",
            "/api/smtpwire/wait?timeout=1e9",
        ):
            assert (await get_json(session, base + path, status=400))["Error"], path
        for method, body in (("PUT", b"{not json"), ("DELETE", b"[1, 2]"), ("PUT", b'{"IDs": 5}')):
            async with session.request(
                method,
                f"{base}/api/v1/messages",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 400, (method, body)
        # The largest values still fit, and page past the end.
        biggest = 2**63 - 1
        for path in (
            f"/api/v1/messages?start={biggest}&limit={biggest}",
            f"/api/v1/search?query=x&start={biggest}&limit={biggest}",
        ):
            listing = await get_json(session, base + path)
            assert (listing["start"], listing["messages"]) == (biggest, []), path
        # Nothing was deleted by the bad requests.
        assert (await get_json(session, f"{base}/api/v1/messages"))["total"] == 1


async def test_wait_endpoint(live_inbox: LiveInbox) -> None:
    base = live_inbox.url
    async with aiohttp.ClientSession() as session:
        timed_out = await get_json(
            session, f"{base}/api/smtpwire/wait?count=1&timeout=0.2", status=408
        )
        assert timed_out["count"] == 0

        async def waiter() -> Any:
            return await get_json(
                session, f"{base}/api/smtpwire/wait?count=2&to=carol@example.com&timeout=20"
            )

        waiting = asyncio.create_task(waiter())
        await asyncio.to_thread(deliver, live_inbox, mail("one", to="x@example.com"), None)
        await asyncio.to_thread(deliver, live_inbox, mail("two", to="carol@example.com"), None)
        assert not waiting.done()
        await asyncio.to_thread(deliver, live_inbox, mail("three", to="Carol@example.com"), None)
        assert (await asyncio.wait_for(waiting, 20))["count"] == 2


async def test_events_stream(live_inbox: LiveInbox) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{live_inbox.url}/api/smtpwire/events") as stream,
    ):
        assert stream.status == 200
        assert stream.content_type == "text/event-stream"

        async def next_event() -> tuple[str, Any]:
            name = ""
            while True:
                line = (await asyncio.wait_for(stream.content.readline(), 20)).decode()
                if line.startswith("event: "):
                    name = line[len("event: ") :].strip()
                elif line.startswith("data: ") and name:
                    return name, json.loads(line[len("data: ") :])

        await asyncio.to_thread(deliver, live_inbox, mail("Live"), None)
        name, summary = await next_event()
        assert name == "new"
        assert summary["Subject"] == "Live"
        async with session.delete(
            f"{live_inbox.url}/api/v1/messages", json={"IDs": [summary["ID"]]}
        ) as response:
            assert response.status == 200
        assert await next_event() == ("deleted", {"IDs": [summary["ID"]]})


async def test_basic_auth(live_inbox_factory: Any) -> None:
    live = live_inbox_factory(auth=("inbox", "s3cret"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{live.url}/api/v1/messages") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic ")
        wrong = {"Authorization": "Basic " + base64.b64encode(b"inbox:guess").decode()}
        async with session.get(f"{live.url}/", headers=wrong) as response:
            assert response.status == 401
        right = {"Authorization": "Basic " + base64.b64encode(b"inbox:s3cret").decode()}
        async with session.get(f"{live.url}/api/v1/messages", headers=right) as response:
            assert response.status == 200


async def test_ui_files_and_placeholder(
    live_inbox: LiveInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smtpwire.server.inbox import _web

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{live_inbox.url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            if _web._static_file(name) is None:
                continue  # the UI's files are another part's
            async with session.get(f"{live_inbox.url}/static/{name}") as response:
                assert response.status == 200
                assert response.content_type == kind
        for name in ("..%2F_web.py", "missing.js", "_web.py"):
            async with session.get(f"{live_inbox.url}/static/{name}") as response:
                assert response.status == 404
        monkeypatch.setattr(_web, "_static_file", lambda name: None)
        async with session.get(f"{live_inbox.url}/") as response:
            assert "The web UI is not installed" in await response.text()


async def test_big_message_is_streamed(live_inbox: LiveInbox) -> None:
    """A 20 MiB message is stored whole, and reading its source back costs the
    process only a few MiB: it is sent in slices."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    body = line * (20 * MiB // len(line) + 1)
    raw = b"From: big@example.com\r\nTo: bob@example.com\r\nSubject: Big\r\n\r\n" + body
    await send(raw, sender="big@example.com", recipients=["bob@example.com"],
               hostname="127.0.0.1", port=live_inbox.smtp_port)  # fmt: skip
    del body
    async with aiohttp.ClientSession() as session:
        [summary] = (await get_json(session, f"{live_inbox.url}/api/v1/messages"))["messages"]
        assert summary["Size"] == len(raw) > 20 * MiB
        gc.collect()
        tracemalloc.start()
        try:
            received = 0
            async with session.get(f"{live_inbox.url}/api/v1/message/{summary['ID']}/raw") as reply:
                assert reply.content_length == len(raw)
                async for chunk in reply.content.iter_chunked(64 * 1024):
                    received += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert received == len(raw)
    print(f"\n20 MiB raw download: traced peak {peak / MiB:.2f} MiB")
    assert peak < 6 * MiB


async def test_concurrent_deliveries_while_reading(live_inbox: LiveInbox) -> None:
    senders = 8
    per_sender = 10

    async def deliver_many(index: int) -> None:
        for number in range(per_sender):
            message = mail(f"c{index}-{number}", to=f"r{index}@example.com", attachment=None)
            await send(message, hostname="127.0.0.1", port=live_inbox.smtp_port)

    async with aiohttp.ClientSession() as session:
        done = asyncio.Event()

        async def read_all_the_time() -> int:
            reads = 0
            while not done.is_set():
                listing = await get_json(session, f"{live_inbox.url}/api/v1/messages?limit=5")
                for summary in listing["messages"]:
                    await get_json(session, f"{live_inbox.url}/api/v1/message/{summary['ID']}")
                reads += 1
            return reads

        reader = asyncio.create_task(read_all_the_time())
        await asyncio.gather(*(deliver_many(index) for index in range(senders)))
        done.set()
        assert await reader > 0
        listing = await get_json(session, f"{live_inbox.url}/api/v1/messages?limit=1000")
    subjects = {m["Subject"] for m in listing["messages"]}
    assert listing["total"] == len(subjects) == senders * per_sender


class PipeliningInbox(LiveInbox):
    """The live inbox with an SMTP server that offers PIPELINING, as
    ``smtpwire-server --web`` does (the fixture's offers aiosmtpd's set only)."""

    def _session(self) -> SMTP:
        return SMTP(
            self.inbox,
            observer=self.inbox.observer,
            hostname="inbox.test",
            enable_SMTPUTF8=True,
            data_size_limit=self._data_size_limit,
            pipelining=True,
        )


@pytest.fixture
def pipelining_inbox() -> Iterator[LiveInbox]:
    live = PipeliningInbox().start()
    try:
        yield live
    finally:
        live.stop()


async def test_ten_thousand_messages(pipelining_inbox: LiveInbox) -> None:
    """10,000 messages arrive over real SMTP -- smtpwire.client's SMTPPool, four
    connections pipelining each message's end with the next one's MAIL, RCPT and
    DATA -- and then the list and the search (from:, subject:, free text) each
    answer through HTTP in well under the bound.  The fill and each request's time
    are printed."""
    live = pipelining_inbox
    count = 10_000

    def raw(number: int) -> bytes:
        return (
            f"From: sender{number % 50}@example.com\r\nTo: user{number}@example.com\r\n"
            f"Subject: Message {number}\r\nMessage-ID: <m{number}@example.com>\r\n\r\n"
            f"Body of message {number}: lorem ipsum dolor sit amet.\r\n"
        ).encode()

    started = time.perf_counter()
    async with SMTPPool(
        hostname="127.0.0.1",
        port=live.smtp_port,
        max_connections=4,
        max_messages_per_connection=count,
    ) as pool:
        results = await asyncio.gather(
            *(
                pool.sendmail(f"sender{number % 50}@example.com", [f"user{number}@example.com"],
                              raw(number))
                for number in range(count)
            )
        )  # fmt: skip
    sent = time.perf_counter() - started
    assert [refused for refused, _ in results if refused] == []
    assert {reply for _, reply in results} == {"Message accepted for delivery"}

    async with aiohttp.ClientSession() as session:
        timings = {}
        for name, path, matched in (
            ("list first page", "/api/v1/messages", count),
            ("list page 150", "/api/v1/messages?start=7500&limit=50", count),
            ("list last page", "/api/v1/messages?start=9950&limit=50", count),
            ("search free text", "/api/v1/search?query=ipsum", count),
            ("search from:", "/api/v1/search?query=from:sender7@", count // 50),
            ("search subject: (1 hit)", "/api/v1/search?query=subject:%22message%209999%22", 1),
        ):
            started = time.perf_counter()
            result = await get_json(session, live.url + path)
            timings[name] = time.perf_counter() - started
            assert result["total"] == count
            assert result["messages_count"] == matched, name
            assert result["messages"]
        # They came over SMTP: the last one's session is the pool's.
        newest = result["messages"][0]
        assert newest["Subject"] == "Message 9999"
        facts = await get_json(session, f"{live.url}/api/smtpwire/message/{newest['ID']}/session")
        assert facts["Peer"][0] == "127.0.0.1"
        assert facts["MailFrom"] == "sender49@example.com"
        assert facts["RcptTo"] == ["user9999@example.com"]
    size = live.inbox.store.size_in_bytes()
    print(
        f"\n{count:,} messages sent over SMTP (SMTPPool, 4 pipelining connections) "
        f"in {sent:.1f} s ({count / sent:,.0f} msg/s); store size {size / MiB:.1f} MiB"
    )
    for name, seconds in timings.items():
        print(f"  {name}: {seconds * 1000:.1f} ms")
    assert max(timings.values()) < 2.0
