"""Fixtures shared by the client tests against smtpwire.server (a module may
override them with its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.client_harness import Sink, smtp_server
from support.server import ServerThread


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def server(sink: Sink) -> Iterator[ServerThread]:
    with smtp_server(sink) as running:
        yield running
