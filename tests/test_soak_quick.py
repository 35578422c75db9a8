"""A 20-second soak (benchmarks/soak.py) as a test: skipped unless SMTPWIRE_SOAK=1,
since it takes about a minute of two busy cores and is a benchmark-style run, not
a unit test (``nox -s soak -- --quick`` is the CI form)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"

pytestmark = pytest.mark.skipif(
    os.environ.get("SMTPWIRE_SOAK") != "1", reason="a 20 s soak: set SMTPWIRE_SOAK=1 to run it"
)


def test_twenty_second_soak_accounts_for_every_message() -> None:
    # The soak stops everything it started itself; the timeout covers its own
    # deadlines (20 s of load, up to 105 s for the clients to finish, the quiet
    # period and the final stop).
    result = subprocess.run(  # noqa: S603 -- our own script
        [sys.executable, str(SOAK), "--duration", "20"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert re.search(r"^ +violations +0$", result.stdout, re.MULTILINE), result.stdout
