"""The event loop the suite runs on: SMTPWIRE_TEST_LOOP (``asyncio``, the default, or
``uvloop``, which ``nox -s tests_uvloop`` sets and tests/conftest.py installs)."""

from __future__ import annotations

import os

import pytest

TEST_LOOPS = ("asyncio", "uvloop")
TEST_LOOP = os.environ.get("SMTPWIRE_TEST_LOOP", "") or "asyncio"


def asyncio_only(reason: str) -> pytest.MarkDecorator:
    """Skip under uvloop a test whose means (not the behaviour it checks) exist only
    on asyncio's own loop; ``reason`` says which."""
    return pytest.mark.skipif(TEST_LOOP != "asyncio", reason=f"asyncio's own loop only: {reason}")
