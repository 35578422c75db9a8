"""The examples of docs/testing.md and the README's pytest example, run as a user
would run them: each code block that defines tests becomes a test file of a fresh
pytest run (pytester, in a subprocess) with the smtpwire plugin, and every test in
it must pass."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "smtpwire.server.testing.pytest_plugin"
_BLOCK = re.compile(r"```(python|ini)\n(.*?)```", re.DOTALL)
_TEST = re.compile(r"^(?:async )?def test_", re.MULTILINE)

# Runs `async def` tests as pytest-asyncio or anyio would for the reader.
ASYNC_RUNNER = """
import asyncio
import inspect

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = inspect.signature(pyfuncitem.obj).parameters
    arguments = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**arguments), 60))
    return True
"""


def plugin_arguments() -> list[str]:
    """``-p`` for the plugin when it is not installed (tests run from the source tree)."""
    installed = any(
        entry.value == PLUGIN for entry in importlib.metadata.entry_points(group="pytest11")
    )
    return [] if installed else ["-p", PLUGIN]


def example_files(document: Path) -> dict[str, str]:
    """The document's Python blocks that define tests, as test modules."""
    blocks = [code for kind, code in _BLOCK.findall(document.read_text()) if kind == "python"]
    tests = [code for code in blocks if _TEST.search(code)]
    return {f"test_example_{number}": code for number, code in enumerate(tests)}


def count_tests(files: dict[str, str]) -> int:
    return sum(len(_TEST.findall(code)) for code in files.values())


@pytest.mark.parametrize("document", ["docs/testing.md", "README.md"])
def test_every_example_passes(pytester: pytest.Pytester, document: str) -> None:
    files = example_files(ROOT / document)
    assert files, f"{document} has no pytest example"
    pytester.makepyfile(**files)
    pytester.makeconftest(ASYNC_RUNNER)
    result = pytester.runpytest_subprocess(
        *plugin_arguments(), "-p", "no:cacheprovider", "-W", "error"
    )
    result.assert_outcomes(passed=count_tests(files))


def test_the_scope_option_shown_in_the_guide_is_honoured(pytester: pytest.Pytester) -> None:
    guide = (ROOT / "docs/testing.md").read_text()
    pytester.makeini(next(code for kind, code in _BLOCK.findall(guide) if kind == "ini"))
    writes_its_port = (
        "def test_port(smtp_server):\n    open('ports', 'a').write(f'{smtp_server.port}\\n')\n"
    )
    pytester.makepyfile(test_first=writes_its_port, test_second=writes_its_port)
    result = pytester.runpytest_subprocess(*plugin_arguments(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    first, second = (pytester.path / "ports").read_text().split()
    assert first != second  # module scope: one server per test module
