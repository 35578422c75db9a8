"""Async tests with the plugin under each runner users have: pytest-asyncio in its
strict mode (marked tests) and its auto mode, anyio's plugin on its asyncio backend
and on its trio backend.  Each runs in a fresh interpreter (pytester, subprocess):
mail sent from a worker thread while the test awaits ``inbox.wait_for_async``, and a
wait that runs out of time.  The runners are test dependencies (noxfile.py); where
one is not installed its cases are skipped.  ``Inbox.wait_for_async`` under
``trio.run`` itself is tested here too, without pytest in between.
"""

from __future__ import annotations

import importlib.util
import smtplib
import threading

import pytest

from plugin.helpers import WAIT, body
from plugin.runs import QUIET_PLUGINS, plugin_arguments
from smtpwire.server.testing import InboxTimeout, SMTPTestServer

pytest_plugins = ["pytester"]  # here, not in a conftest: see conftest.py

SENDS_FROM_A_THREAD = """
import smtplib
import threading

import pytest

from smtpwire.server.testing import InboxTimeout


def send_in_a_thread(server):
    def send():
        with smtplib.SMTP(*server.address) as client:
            client.sendmail("app@example.com", ["ann@example.com"], "Subject: hi\\n\\nx")

    thread = threading.Thread(target=send)
    thread.start()
    return thread


{mark}
async def test_wait_for_async(smtp_server):
    thread = send_in_a_thread(smtp_server)
    [message] = await smtp_server.inbox.wait_for_async(1, to="ann@example.com", timeout=10)
    thread.join()
    assert message.subject == "hi"


{mark}
async def test_wait_for_async_runs_out_of_time(smtp_server):
    with pytest.raises(InboxTimeout, match="expected 1 matching"):
        await smtp_server.inbox.wait_for_async(1, timeout=0.05)
"""

CLIENT_TASK = """

{mark}
async def test_smtpwire_client_in_a_task(smtp_server):
    import asyncio
    from smtpwire.client import SMTP

    async def send():
        async with SMTP(**smtp_server.client_kwargs()) as client:
            await client.sendmail("app@example.com", ["bob@example.com"], b"Subject: t\\n\\nx")

    task = asyncio.create_task(send())
    [message] = await smtp_server.inbox.wait_for_async(1, to="bob@example.com", timeout=10)
    await task
    assert message.subject == "t"
"""

ANYIO_BACKENDS = """

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_the_backend_is_the_one_asked_for(anyio_backend):
    import sniffio

    assert sniffio.current_async_library() == anyio_backend


async def test_sent_by_an_anyio_worker_thread(smtp_server):
    import anyio

    def send():
        with smtplib.SMTP(*smtp_server.address) as client:
            client.sendmail("app@example.com", ["cy@example.com"], "Subject: w\\r\\n\\r\\nx\\r\\n")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(anyio.to_thread.run_sync, send)
        [message] = await smtp_server.inbox.wait_for_async(1, to="cy@example.com", timeout=10)
    assert message.subject == "w"
"""


def needs(*modules: str) -> None:
    for name in modules:
        pytest.importorskip(name)


def run_in_a_new_interpreter(pytester: pytest.Pytester, ini: str) -> pytest.RunResult:
    pytester.makeini(ini)
    return pytester.runpytest_subprocess(*plugin_arguments(), *QUIET_PLUGINS, "-W", "error")


# Set, so pytest-asyncio (0.24 and later) does not warn that it is unset.
ASYNCIO_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\nasyncio_mode = {mode}\n"


def test_pytest_asyncio_strict_mode(pytester: pytest.Pytester) -> None:
    needs("pytest_asyncio")
    mark = "@pytest.mark.asyncio"
    pytester.makepyfile(
        test_user=(SENDS_FROM_A_THREAD + CLIENT_TASK).format(mark=mark)
        + "\n\nasync def test_unmarked_is_not_run_in_strict_mode(smtp_server):\n    pass\n"
    )
    result = run_in_a_new_interpreter(pytester, ASYNCIO_INI.format(mode="strict"))
    # The unmarked coroutine is pytest's "async def functions are not natively
    # supported" failure (pytest 8.4 and later), as strict mode promises.
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked_is_not_run_in_strict_mode*"])


def test_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    needs("pytest_asyncio")
    pytester.makepyfile(test_user=(SENDS_FROM_A_THREAD + CLIENT_TASK).format(mark=""))
    result = run_in_a_new_interpreter(pytester, ASYNCIO_INI.format(mode="auto"))
    result.assert_outcomes(passed=3)


def test_anyio_on_asyncio_and_on_trio(pytester: pytest.Pytester) -> None:
    needs("anyio", "trio", "sniffio")
    pytester.makepyfile(
        test_user="import pytest\n\npytestmark = pytest.mark.anyio\n"
        + SENDS_FROM_A_THREAD.format(mark="")
        + ANYIO_BACKENDS
    )
    ini = "[pytest]\n"
    if importlib.util.find_spec("pytest_asyncio") is not None:
        ini += "asyncio_default_fixture_loop_scope = function\n"
    result = run_in_a_new_interpreter(pytester, ini)
    result.assert_outcomes(passed=8)  # four tests, each on both backends
    for backend in ("asyncio", "trio"):
        result.stdout.no_fnmatch_line(f"*[[]{backend}[]]*FAILED*")


# --- without pytest in between ------------------------------------------------------------


def test_wait_for_async_under_trio_run(server: SMTPTestServer) -> None:
    trio = pytest.importorskip("trio")

    def send() -> None:
        with smtplib.SMTP(*server.address, timeout=WAIT) as client:
            client.sendmail("app@example.com", ["ann@example.com"], body("from trio"))

    async def main() -> list[str]:
        thread = threading.Thread(target=send)
        thread.start()
        messages = await server.inbox.wait_for_async(1, timeout=WAIT)
        await trio.to_thread.run_sync(thread.join)
        with pytest.raises(InboxTimeout):
            await server.inbox.wait_for_async(2, timeout=0.05)
        return [str(message.subject) for message in messages]

    assert trio.run(main) == ["from trio"]


def test_wait_for_async_outside_a_coroutine_runner_says_what_works(
    server: SMTPTestServer,
) -> None:
    coroutine = server.inbox.wait_for_async(1)
    with pytest.raises(RuntimeError, match=r"asyncio .* or trio.*call wait_for"):
        coroutine.send(None)
    coroutine.close()
