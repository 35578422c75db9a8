"""The examples of docs/server.md's "Running on uvloop" and "Watching a session:
observers", run as written: each Python block is a program of its own, run by this
interpreter in a fresh process."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs/server.md"
SECTION = "## Running on uvloop"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
WAIT = 60.0


def section(title: str) -> str:
    text = GUIDE.read_text()
    start = text.index(title + "\n")
    end = text.find("\n## ", start + len(title))
    return text[start : end if end >= 0 else None]


EXAMPLES = _BLOCK.findall(section(SECTION))


def uvloop_installed() -> bool:
    try:
        importlib.import_module("uvloop")
    except ImportError:
        return False
    return True


def test_the_section_has_its_examples() -> None:
    assert len(EXAMPLES) == 3
    assert any(
        "Controller(" in code and "loop=uvloop.new_event_loop()" in code for code in EXAMPLES
    )
    assert any("uvloop.run(main())" in code for code in EXAMPLES)


@pytest.mark.skipif(not uvloop_installed(), reason="uvloop is not installed")
@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example_{n}" for n in range(len(EXAMPLES))])
def test_the_uvloop_example_runs(code: str) -> None:
    if "asyncio.Runner" in code and sys.version_info < (3, 11):
        pytest.skip("asyncio.Runner is new in Python 3.11")
    result = subprocess.run(  # noqa: S603 - this interpreter, the guide's own code
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


OBSERVER_EXAMPLES = _BLOCK.findall(section("## Watching a session: observers"))


def test_the_observer_example_runs() -> None:
    [code] = OBSERVER_EXAMPLES
    result = subprocess.run(  # noqa: S603 - this interpreter, the guide's own code
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    # As smtplib sends it: "rcpt TO:" before Python 3.13, "rcpt to:" since.
    assert "c: rcpt to:<gone@example.org>" in [line.lower() for line in lines]
    assert "S: 550 5.1.1 No such user" in lines
    assert "accepted: a@example.org ['b@example.org'] ('250 OK',)" in lines
