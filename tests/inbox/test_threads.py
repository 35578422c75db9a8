"""The inbox across threads: every database call runs in the store's worker thread,
never in an event loop's; and an :class:`Inbox` handler served by a
:class:`Controller` (its own thread and loop) with the web inbox in another loop."""

from __future__ import annotations

import asyncio
import functools
import smtplib
import threading
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from smtpwire.client import send
from smtpwire.server.controller import Controller
from smtpwire.server.inbox import Inbox, MessageStore
from smtpwire.server.inbox._database import Database

if TYPE_CHECKING:
    from inbox.conftest import LiveInbox

WAIT = 20.0


def mail(subject: str, to: str = "bob@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Ann <ann@example.com>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(f"Body of {subject}\n")
    message.add_alternative(f"<p>Body of <b>{subject}</b></p>", subtype="html")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf",
                           filename=f"{subject}.pdf")  # fmt: skip
    return message


async def get_json(session: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=WAIT)) as response:
        assert response.status == status, await response.text()
        return await response.json()


async def test_database_calls_never_run_on_an_event_loop(
    live_inbox_factory: Callable[..., LiveInbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every method of the database and every SQL statement it runs (SQLite's trace
    callback sees those of executemany and executescript too) is recorded with its
    thread, through a delivery over SMTP and every kind of API call: all ran in
    the one worker thread, none in the server's loop nor in the test's."""
    calls: list[tuple[str, int]] = []

    def recorded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Database, *args: Any, **kwargs: Any) -> Any:
            calls.append((name, threading.get_ident()))
            result = method(self, *args, **kwargs)
            if name == "__init__":
                self.connection.set_trace_callback(
                    lambda sql: calls.append((f"sql {sql.split()[0]}", threading.get_ident()))
                )
            return result

        return wrapper

    for name, value in list(vars(Database).items()):
        if callable(value) and name != "__del__" and (name == "__init__" or name[0] != "_"):
            monkeypatch.setattr(Database, name, recorded(name, value))
    # A blocking call from a loop would not run SQL there, but would stall the loop.
    blocking: list[int] = []
    run_sync = MessageStore.run_sync

    def recorded_run_sync(self: MessageStore, *args: Any) -> Any:
        blocking.append(threading.get_ident())
        return run_sync(self, *args)

    monkeypatch.setattr(MessageStore, "run_sync", recorded_run_sync)

    live = live_inbox_factory()
    loop_thread = live._thread.ident
    test_thread = threading.get_ident()
    store = live.inbox.store
    worker = await store.run(lambda db: threading.get_ident())

    def deliver(message: EmailMessage) -> None:
        with smtplib.SMTP(*live.smtp_address, timeout=WAIT) as client:
            client.send_message(message)

    base = live.url
    async with aiohttp.ClientSession() as session:
        waiting = asyncio.create_task(get_json(session, f"{base}/api/smtpwire/wait?count=3"))
        await asyncio.to_thread(deliver, mail("one"))
        await asyncio.to_thread(deliver, mail("two", to="carol@example.com"))
        await send(mail("three"), hostname="127.0.0.1", port=live.smtp_port)
        assert (await waiting)["count"] == 3

        listing = await get_json(session, f"{base}/api/v1/messages?limit=2")
        assert listing["total"] == 3
        found = await get_json(session, f"{base}/api/v1/search?query=to:carol")
        [summary] = found["messages"]
        message_url = f"{base}/api/v1/message/{summary['ID']}"
        message = await get_json(session, message_url)
        await get_json(session, f"{message_url}/headers")
        await get_json(session, f"{base}/api/smtpwire/message/{summary['ID']}/session")
        await get_json(session, f"{base}/api/smtpwire/info")
        for url in (
            f"{message_url}/raw",
            f"{message_url}/part/{message['Attachments'][0]['PartID']}",
            f"{base}/api/smtpwire/message/latest/html",
        ):
            async with session.get(url) as response:
                assert response.status == 200, url
                await response.read()
        async with session.put(f"{base}/api/v1/messages", json={"Search": "one", "Read": True}):
            pass
        async with session.delete(f"{base}/api/v1/search?query=subject:two") as response:
            assert response.status == 200
        async with session.delete(
            f"{base}/api/v1/messages", json={"IDs": [listing["messages"][0]["ID"]]}
        ):
            pass
        async with session.delete(f"{base}/api/v1/messages") as response:
            assert response.status == 200
        assert (await get_json(session, f"{base}/api/v1/messages"))["total"] == 0

    names = {name for name, _ in calls}
    # The recording saw the work: it is not vacuous.
    assert {"__init__", "add", "listing", "detail", "raw_slice", "delete", "set_read"} <= names
    assert {"sql INSERT", "sql SELECT", "sql UPDATE", "sql DELETE"} <= names
    assert loop_thread not in {thread for _, thread in calls}
    assert test_thread not in {thread for _, thread in calls}
    assert {thread for _, thread in calls} == {worker}
    assert loop_thread not in blocking


async def test_a_controller_serving_the_inbox_beside_the_web_inbox() -> None:
    """The documented set-up: the SMTP server in a Controller's thread and loop, the
    web inbox in this test's loop.  A message sent with smtplib is stored, announced
    across the loops (the wait endpoint answers), and the API returns it."""
    inbox = Inbox()
    controller = Controller(inbox, observer=inbox.observer, hostname="127.0.0.1", port=0)
    await asyncio.to_thread(controller.start)
    try:
        assert controller.server is not None
        port = controller.server.sockets[0].getsockname()[1]
        async with (
            inbox.serve_web("127.0.0.1", 0) as web,
            aiohttp.ClientSession() as session,
        ):
            waiting = asyncio.create_task(
                get_json(session, f"{web.url}/api/smtpwire/wait?count=1&to=bob@example.com")
            )

            def send_one() -> None:
                with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
                    refused = client.send_message(mail("Across loops"))
                assert refused == {}

            await asyncio.to_thread(send_one)
            assert (await asyncio.wait_for(waiting, WAIT)) == {"count": 1}

            listing = await get_json(session, f"{web.url}/api/v1/messages")
            assert (listing["total"], listing["unread"]) == (1, 1)
            [summary] = listing["messages"]
            assert summary["Subject"] == "Across loops"
            assert summary["From"] == {"Name": "Ann", "Address": "ann@example.com"}
            assert summary["To"] == [{"Name": "", "Address": "bob@example.com"}]
            assert summary["Attachments"] == 1

            message = await get_json(session, f"{web.url}/api/v1/message/{summary['ID']}")
            assert message["Text"] == "Body of Across loops\n"
            assert "<b>Across loops</b>" in message["HTML"]
            assert [a["FileName"] for a in message["Attachments"]] == ["Across loops.pdf"]

            async with session.get(f"{web.url}/api/v1/message/{summary['ID']}/raw") as response:
                assert b"Subject: Across loops" in await response.read()
            facts = await get_json(
                session, f"{web.url}/api/smtpwire/message/{summary['ID']}/session"
            )
            assert facts["MailFrom"] == "ann@example.com"
            assert facts["RcptTo"] == ["bob@example.com"]
            assert facts["Transcript"][-1].startswith("C: <message, ")
            found = await get_json(session, f"{web.url}/api/v1/search?query=across")
            assert [m["ID"] for m in found["messages"]] == [summary["ID"]]
        # The Python side sees the same store.
        messages, *_ = await inbox.store.listing(0, 10)
        assert [m["ID"] for m in messages] == [summary["ID"]]
    finally:
        await asyncio.to_thread(controller.stop)
        inbox.close()
