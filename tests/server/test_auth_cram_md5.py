"""CRAM-MD5 on the server (RFC 2195), opt-in with ``cram_md5_secret``: driven by
smtpwire's own client and by raw bytes for the refusals."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smtpwire.client import SMTP as Client
from smtpwire.client import SMTPAuthenticationError
from smtpwire.server.controller import Controller
from support.server import RawClient, Recorder, text

SECRETS = {b"anne": "s3cret", b"bart": b"hunter2"}


class Seen(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.auth_data: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.auth_data.append(session.auth_data)
        return await super().handle_DATA(server, session, envelope)


async def async_lookup(username: bytes) -> str | bytes | None:
    return SECRETS.get(username)


@contextmanager
def server(handler: Any, **kwargs: Any) -> Iterator[Controller]:
    controller = Controller(handler, hostname="127.0.0.1", port=0, auth_require_tls=False, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.mark.parametrize("lookup", [SECRETS.get, async_lookup])
async def test_smtpwire_client_authenticates_with_cram_md5(lookup: Any) -> None:
    handler = Seen()
    with server(handler, cram_md5_secret=lookup) as controller:
        async with Client(hostname="127.0.0.1", port=controller.port, start_tls=False) as client:
            await client.ehlo()
            assert "cram-md5" in client.server_auth_methods
            response = await client.auth_crammd5("anne", "s3cret")
            assert response.code == 235
            await client.sendmail("anne@example.com", ["b@example.com"], b"hi\r\n")
    assert handler.auth_data == [b"anne"]


async def test_wrong_password_and_unknown_user_are_refused() -> None:
    with server(Recorder(), cram_md5_secret=SECRETS.get) as controller:
        for user, password in (("anne", "wrong"), ("nobody", "s3cret")):
            async with Client(
                hostname="127.0.0.1", port=controller.port, start_tls=False
            ) as client:
                await client.ehlo()
                with pytest.raises(SMTPAuthenticationError) as refused:
                    await client.auth_crammd5(user, password)
                assert refused.value.code == 535


def test_not_offered_without_a_secret_lookup_or_when_excluded() -> None:
    for kwargs in ({}, {"cram_md5_secret": SECRETS.get, "auth_exclude_mechanism": ["cram-md5"]}):
        with server(Recorder(), **kwargs) as controller, RawClient(controller.port) as raw:
            raw.reply()
            ehlo = raw.command("EHLO me")
            assert not any("CRAM-MD5" in line for line in ehlo.lines)
            assert (
                text(raw.command("AUTH CRAM-MD5")) == "504 5.5.4 Unrecognized authentication type"
            )


def test_each_challenge_is_fresh_and_a_replayed_answer_fails() -> None:
    with server(Recorder(), cram_md5_secret=SECRETS.get) as controller:
        with RawClient(controller.port) as first:
            first.reply()
            first.command("EHLO me")
            challenge = base64.b64decode(first.command("AUTH CRAM-MD5").lines[0])
            digest = hmac.new(b"hunter2", challenge, "md5").hexdigest()
            answer = base64.b64encode(b"bart " + digest.encode())
            assert first.command(answer).code == 235
        with RawClient(controller.port) as second:
            second.reply()
            second.command("EHLO me")
            other = base64.b64decode(second.command("AUTH CRAM-MD5").lines[0])
            assert other != challenge
            assert second.command(answer).code == 535  # the old answer, replayed


def test_malformed_answers_and_an_initial_response_get_501() -> None:
    with (
        server(Recorder(), cram_md5_secret=SECRETS.get) as controller,
        RawClient(controller.port) as raw,
    ):
        raw.reply()
        raw.command("EHLO me")
        assert raw.command("AUTH CRAM-MD5 Zm9v").code == 501
        assert raw.command("AUTH CRAM-MD5").code == 334
        assert text(raw.command(base64.b64encode(b"no-digest"))) == (
            "501 5.5.2 Can't split auth value"
        )
        assert raw.command("AUTH CRAM-MD5").code == 334
        assert text(raw.command("*")) == "501 5.7.0 Auth aborted"
