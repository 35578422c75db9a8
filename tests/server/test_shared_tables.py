"""The command, hook and AUTH tables are found once per class and shared by every
connection, yet each connection still sees what its own server and handler have:
hooks set on a handler instance, handlers of other classes, mechanisms excluded
for one server, handlers that make attributes up (mocks), old-style EHLO hooks.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from unittest import mock

import pytest

from smtpwire.server.handlers import Sink
from smtpwire.server.smtp import SMTP, AuthResult, Envelope, Session
from support.server import RawClient, serving

HOST = "testhost"


def connect(port: int) -> RawClient:
    client = RawClient(port)
    assert client.reply().code == 220
    return client


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.seen.append(address)
        envelope.rcpt_tos.append(address)
        return "250 recorded"


class Other(Recorder):
    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        return "250 other"


async def test_one_table_per_class_and_configuration() -> None:
    first, second = SMTP(Sink()), SMTP(Sink())
    assert first._smtp_methods is second._smtp_methods
    assert first._hooks is second._hooks
    assert first._auth_methods is second._auth_methods
    chunking = SMTP(Sink(), chunking=True)
    assert "BDAT" in chunking._smtp_methods
    assert "BDAT" not in first._smtp_methods
    assert SMTP(Recorder())._hooks is not first._hooks


async def test_a_hook_set_on_the_instance_is_seen_by_the_next_connection() -> None:
    handler = Recorder()
    assert "MAIL" not in SMTP(handler)._hooks.names

    async def handle_MAIL(
        server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        return "250 from the instance"

    handler.handle_MAIL = handle_MAIL  # type: ignore[attr-defined]
    with serving(lambda: SMTP(handler, hostname=HOST)) as server, connect(server.port) as client:
        client.command("EHLO client.example")
        assert str(client.command("MAIL FROM:<a@example.com>")) == "250 from the instance"
        assert str(client.command("RCPT TO:<b@example.com>")) == "250 recorded"
    assert handler.seen == ["b@example.com"]
    # Another instance of the class, without the attribute, does not get it.
    assert "MAIL" not in SMTP(Recorder())._hooks.names


async def test_handlers_of_two_classes_on_one_server_class_keep_their_own_hooks() -> None:
    plain, other = Recorder(), Other()
    with serving(lambda: SMTP(plain, hostname=HOST)) as one, connect(one.port) as client:
        client.command("EHLO client.example")
        assert str(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
    with serving(lambda: SMTP(other, hostname=HOST)) as two, connect(two.port) as client:
        client.command("EHLO client.example")
        assert str(client.command("MAIL FROM:<a@example.com>")) == "250 other"


async def test_a_mock_handler_is_looked_at_for_each_connection() -> None:
    handler = mock.Mock(spec=["handle_NOOP"])
    handler.handle_NOOP = mock.AsyncMock(return_value="250 mocked")
    assert SMTP(handler)._hooks.names == {"NOOP": "handle_NOOP"}
    bare = mock.Mock(spec=[])
    assert dict(SMTP(bare)._hooks.names) == {}


class OldEhlo:
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        return "250 old"


async def test_the_old_ehlo_hook_warns_for_every_server_made() -> None:
    for _ in range(2):
        with pytest.warns(DeprecationWarning, match="5-argument handle_EHLO"):
            SMTP(OldEhlo())


async def test_an_instance_ehlo_hook_is_judged_by_its_own_signature() -> None:
    handler = OldEhlo()
    with pytest.warns(DeprecationWarning, match="5-argument handle_EHLO"):
        SMTP(handler)

    async def handle_EHLO(
        server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        return responses

    handler.handle_EHLO = handle_EHLO  # type: ignore[method-assign,assignment]
    assert SMTP(handler)._hooks.ehlo_version == "new"


def _accept_all(*args: Any) -> AuthResult:
    return AuthResult(success=True)


class HandlerMechanism(Sink):
    async def auth_CUSTOM(self, server: SMTP, args: list[str]) -> AuthResult:
        await server.push("235 2.7.0 custom ok")
        return AuthResult(success=True, handled=True)


@pytest.mark.parametrize("excluded", [[], ["login"]])
def test_auth_tables_follow_the_options_of_each_server(excluded: list[str]) -> None:
    kwargs: dict[str, Any] = {
        "hostname": HOST,
        "authenticator": _accept_all,
        "auth_require_tls": False,
        "auth_exclude_mechanism": excluded,
    }
    with serving(lambda: SMTP(HandlerMechanism(), **kwargs)) as server:
        with connect(server.port) as client:
            offered = client.command("EHLO client.example").lines[-2]
            assert offered == ("AUTH CUSTOM PLAIN" if excluded else "AUTH CUSTOM LOGIN PLAIN")
            assert str(client.command("AUTH CUSTOM")) == "235 2.7.0 custom ok"
        with connect(server.port) as client:
            client.command("EHLO client.example")
            credentials = base64.b64encode(b"\0ann\0pw").decode()
            assert client.command(f"AUTH PLAIN {credentials}").code == 235


async def test_tables_are_built_in_the_loop_thread_safely() -> None:
    """Servers made at once in two threads get the same tables."""
    loop = asyncio.get_running_loop()
    made = await asyncio.gather(
        *(loop.run_in_executor(None, lambda: SMTP(Other(), loop=loop)) for _ in range(4))
    )
    assert len({id(server._hooks) for server in made}) == 1
    assert len({id(server._smtp_methods) for server in made}) == 1
