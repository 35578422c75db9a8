"""The examples of docs/testing.md and the README's pytest example, run as a user
would run them: each code block that defines tests becomes a test file of a fresh
pytest run (pytester, in a subprocess) with the smtpwire plugin, and every test in
it must pass.  The async examples run under the runner they are written for
(pytest-asyncio, anyio on asyncio and trio), skipped where it is not installed; the
ini blocks are run too."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "smtpwire.server.testing.pytest_plugin"
QUIET = ("-p", "no:cacheprovider", "-p", "no:benchmark")
_BLOCK = re.compile(r"```(python|ini)\n(.*?)```", re.DOTALL)
_TEST = re.compile(r"^(?:async )?def test_", re.MULTILINE)

# The runners the guide's async examples are written for, and the modules they need.
RUNNERS = {"@pytest.mark.asyncio": ("pytest_asyncio",), "@pytest.mark.anyio": ("anyio", "trio")}
# pytest-asyncio 0.24 and later warn (an error here, with -W error) while it is unset.
ASYNCIO_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
# The examples that need no async runner run without pytest-asyncio, where installed:
# their ini (the guide's own) does not set its loop scope.
NO_ASYNC_RUNNER = ("-p", "no:asyncio")


def runner_of(code: str) -> str | None:
    return next((mark for mark in RUNNERS if mark in code), None)


def plugin_arguments() -> list[str]:
    """``-p`` for the plugin when it is not installed (tests run from the source tree)."""
    installed = any(
        entry.value == PLUGIN for entry in importlib.metadata.entry_points(group="pytest11")
    )
    return [] if installed else ["-p", PLUGIN]


def example_files(document: Path, *, runner: str | None = None) -> dict[str, str]:
    """The document's Python blocks that define tests, as test modules: the sync ones
    (and async ones with no runner named), or those written for ``runner``."""
    blocks = [code for kind, code in _BLOCK.findall(document.read_text()) if kind == "python"]
    tests = [code for code in blocks if _TEST.search(code) and runner_of(code) == runner]
    return {f"test_example_{number}": code for number, code in enumerate(tests)}


def count_tests(files: dict[str, str]) -> int:
    return sum(len(_TEST.findall(code)) for code in files.values())


@pytest.mark.parametrize("document", ["docs/testing.md", "README.md"])
def test_every_example_passes(pytester: pytest.Pytester, document: str) -> None:
    files = example_files(ROOT / document)
    assert files, f"{document} has no pytest example"
    pytester.makepyfile(**files)
    result = pytester.runpytest_subprocess(
        *plugin_arguments(), *QUIET, *NO_ASYNC_RUNNER, "-W", "error"
    )
    result.assert_outcomes(passed=count_tests(files))


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_every_async_example_passes_under_its_runner(
    pytester: pytest.Pytester, runner: str
) -> None:
    for module in RUNNERS[runner]:
        pytest.importorskip(module)
    files = example_files(ROOT / "docs/testing.md", runner=runner)
    assert files, f"the guide has no example for {runner}"
    pytester.makepyfile(**files)
    if importlib.util.find_spec("pytest_asyncio") is not None:
        pytester.makeini(ASYNCIO_INI)
    result = pytester.runpytest_subprocess(*plugin_arguments(), *QUIET, "-W", "error")
    per_test = 2 if runner == "@pytest.mark.anyio" else 1  # anyio: asyncio and trio
    result.assert_outcomes(passed=count_tests(files) * per_test)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_the_settings_shown_in_the_guide_are_honoured(pytester: pytest.Pytester) -> None:
    """The guide's fixed-port ini block, on a free port instead of 2526 (retried on
    another when the port is taken before the inner run listens on it)."""
    guide = (ROOT / "docs/testing.md").read_text()
    block = next(code for kind, code in _BLOCK.findall(guide) if "smtpwire_port" in code)
    pytester.makepyfile(
        test_settings="""
        import smtplib

        def test_settings(smtp_server, smtp_client_context):
            assert (smtp_server.tls, smtp_server.username) == ("starttls", "app")
            with smtplib.SMTP(*smtp_server.address) as client:
                client.starttls(context=smtp_client_context)
                client.login("app", "app-secret")
                client.sendmail("app@example.com", ["ann@example.com"], "Subject: s\\n\\nx")
            with open("port", "w") as file:
                file.write(str(smtp_server.port))
        """
    )
    for _ in range(5):
        port = free_port()
        pytester.makeini(block.replace("2526", str(port)))
        result = pytester.runpytest_subprocess(
            *plugin_arguments(), *QUIET, *NO_ASYNC_RUNNER, "-W", "error"
        )
        if "already in use" not in result.stdout.str():
            break
    result.assert_outcomes(passed=1)
    assert (pytester.path / "port").read_text() == str(port)


def test_the_scope_option_shown_in_the_guide_is_honoured(pytester: pytest.Pytester) -> None:
    guide = (ROOT / "docs/testing.md").read_text()
    pytester.makeini(next(code for kind, code in _BLOCK.findall(guide) if kind == "ini"))
    writes_its_port = (
        "def test_port(smtp_server):\n    open('ports', 'a').write(f'{smtp_server.port}\\n')\n"
    )
    pytester.makepyfile(test_first=writes_its_port, test_second=writes_its_port)
    result = pytester.runpytest_subprocess(*plugin_arguments(), *QUIET, *NO_ASYNC_RUNNER)
    result.assert_outcomes(passed=2)
    first, second = (pytester.path / "ports").read_text().split()
    assert first != second  # module scope: one server per test module
