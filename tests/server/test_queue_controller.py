"""QueueController: lazr.smtptest's idiom of a live server whose mail lands in a
queue, driven by smtplib over real sockets."""

from __future__ import annotations

import email.message
import queue
import smtplib
import socket
import threading
from collections.abc import Iterator

import pytest

from smtpwire.server.controller import Controller, QueueController

WAIT = 10.0


@pytest.fixture
def controller() -> Iterator[QueueController]:
    controller = QueueController("127.0.0.1", 0)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def client_for(controller: QueueController) -> smtplib.SMTP:
    return smtplib.SMTP(controller.hostname, controller.port, timeout=WAIT)


def message_text(subject: str, *, extra: str = "") -> str:
    return (
        f"From: Anne Person <anne@example.com>\r\n"
        f"To: Bart Person <bart@example.com>\r\n"
        f"Subject: {subject}\r\n"
        f"{extra}"
        f"\r\n"
        f"Hi Bart, this is {subject}.\r\n"
    )


def send(controller: QueueController, *subjects: str) -> None:
    """smtplib returns from sendmail() only after the server's reply to DATA, and
    the handler queues the message before that reply: no waiting needed after it."""
    with client_for(controller) as client:
        for subject in subjects:
            assert (
                client.sendmail("anne@example.com", ["bart@example.com"], message_text(subject))
                == {}
            )


def subjects(messages: list[email.message.Message]) -> list[str | None]:
    return [message["Subject"] for message in messages]


def test_lazr_style_construction_and_attributes() -> None:
    controller = QueueController("127.0.0.1", 0)
    assert isinstance(controller, Controller)
    assert isinstance(controller.queue, queue.Queue)
    assert controller.hostname == "127.0.0.1"
    assert controller.port == 0
    assert list(controller) == []
    controller.start()
    try:
        assert controller.port != 0
    finally:
        controller.stop()
    with socket.socket() as probe:
        probe.settimeout(WAIT)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", controller.port))


def test_messages_arrive_in_order_with_envelope_headers(controller: QueueController) -> None:
    with client_for(controller) as client:
        client.sendmail(
            "anne@example.com",
            ["bart@example.com", "cris@example.com"],
            message_text("first", extra="X-Peer: forged\r\nX-RcptTo: nobody\r\n"),
        )
        client.sendmail("dave@example.com", ["erin@example.com"], message_text("second"))
        assert client.sock is not None
        first_peer = client.sock.getsockname()
    with client_for(controller) as client:
        client.sendmail("fred@example.com", ["gina@example.com"], message_text("third"))
        assert client.sock is not None
        third_peer = client.sock.getsockname()

    messages = list(controller)
    assert subjects(messages) == ["first", "second", "third"]
    assert all(isinstance(message, email.message.Message) for message in messages)
    first, second, third = messages
    assert first.get_all("X-Peer") == [str(first_peer)]
    assert first["X-MailFrom"] == "anne@example.com"
    assert first.get_all("X-RcptTo") == ["bart@example.com, cris@example.com"]
    assert first["From"] == "Anne Person <anne@example.com>"
    assert first.get_payload() == "Hi Bart, this is first.\r\n"
    assert second["X-MailFrom"] == "dave@example.com"
    assert second["X-RcptTo"] == "erin@example.com"
    assert third["X-Peer"] == str(third_peer)
    assert third["X-Peer"] != first["X-Peer"]


def test_iterating_drains_the_queue(controller: QueueController) -> None:
    send(controller, "one", "two")
    assert controller.queue.qsize() == 2
    assert subjects(list(controller)) == ["one", "two"]
    assert list(controller) == []
    assert controller.queue.empty()
    send(controller, "three")
    assert subjects(list(controller)) == ["three"]


def test_iteration_never_waits(controller: QueueController) -> None:
    iterator = iter(controller)
    with pytest.raises(StopIteration):
        next(iterator)


def test_reset_forgets_what_arrived_so_far(controller: QueueController) -> None:
    send(controller, "old one", "old two")
    controller.reset()
    assert controller.queue.empty()
    send(controller, "new")
    assert subjects(list(controller)) == ["new"]


def test_wait_for_returns_the_first_messages_and_leaves_the_rest(
    controller: QueueController,
) -> None:
    send(controller, "a", "b", "c")
    assert subjects(controller.wait_for(2, timeout=WAIT)) == ["a", "b"]
    assert subjects(controller.wait_for(timeout=WAIT)) == ["c"]
    assert controller.wait_for(0) == []


def test_wait_for_waits_for_mail_sent_from_another_thread(controller: QueueController) -> None:
    failures: list[BaseException] = []

    def application() -> None:
        try:
            for subject in ("async 1", "async 2", "async 3"):
                send(controller, subject)
        except BaseException as error:
            failures.append(error)

    sender = threading.Thread(target=application)
    sender.start()
    try:
        messages = controller.wait_for(3, timeout=WAIT)
    finally:
        sender.join(WAIT)
    assert failures == []
    assert subjects(messages) == ["async 1", "async 2", "async 3"]


def test_wait_for_timeout_says_how_many_arrived(controller: QueueController) -> None:
    send(controller, "lonely")
    with pytest.raises(TimeoutError, match=r"1 of 2 expected message\(s\) arrived within 0.1 s"):
        controller.wait_for(2, timeout=0.1)
    # Nothing is lost by the timeout.
    assert subjects(list(controller)) == ["lonely"]
    with pytest.raises(TimeoutError, match="0 of 1"):
        controller.wait_for(timeout=0.05)


def test_wait_for_refuses_a_negative_count(controller: QueueController) -> None:
    with pytest.raises(ValueError, match="negative"):
        controller.wait_for(-1)


def test_smtputf8_mail_is_queued(controller: QueueController) -> None:
    body = "Subject: caf\u00e9\r\n\r\nd\u00e9j\u00e0 vu\r\n".encode()
    with client_for(controller) as client:
        client.ehlo()
        assert client.has_extn("smtputf8")
        client.sendmail("j\u00f6rg@example.com", ["b@example.com"], body, mail_options=["SMTPUTF8"])
    (message,) = controller.wait_for(timeout=WAIT)
    assert message["X-MailFrom"] == "j\u00f6rg@example.com"
    assert message.get_payload(decode=True) == "d\u00e9j\u00e0 vu\r\n".encode()


def test_queue_is_kept_across_restarts(controller: QueueController) -> None:
    send(controller, "before")
    controller.stop()
    controller.start()
    send(controller, "after")
    assert subjects(list(controller)) == ["before", "after"]
