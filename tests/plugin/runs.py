"""Running pytest on a user's test files (pytester) with the smtpwire plugin, as the
plugin's tests do.

Those runs start servers in threads of this process; :func:`run` checks that none
is left behind.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from importlib.metadata import entry_points

import pytest

from plugin.helpers import WAIT

PLUGIN = "smtpwire.server.testing.pytest_plugin"

# An in-process run puts sys.modules back as it found it: a package first imported
# during one (cryptography, for the test CA) is imported anew by the next, which
# cryptography's compiled core refuses ("curve must be an EllipticCurve instance").
# Imported here first, it stays.
with contextlib.suppress(ImportError):
    importlib.import_module("smtpwire.server.testing._certs_cryptography")


# No cache files in the user's project; no pytest-benchmark, where it is installed: under
# xdist it warns that it is disabled, which -W error would turn into a failed run.
QUIET_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:benchmark")


# These in-process runs bring their own runner for async tests; pytest-asyncio, where
# installed, would warn of its unset loop scope (an error with -W error).
NO_ASYNC_RUNNERS = ("-p", "no:asyncio")


def plugin_arguments() -> list[str]:
    """Installed, smtpwire-server registers the plugin (entry point pytest11); run
    from the source tree (PYTHONPATH), it has to be named."""
    if any(entry.value == PLUGIN for entry in entry_points(group="pytest11")):
        return []
    return ["-p", PLUGIN]


def run(pytester: pytest.Pytester, *arguments: str) -> pytest.RunResult:
    """pytest on the files written into ``pytester``, in this process, with warnings
    as errors (an unclosed socket, an exception in a server thread); afterwards no
    thread it started may still run."""
    warnings = ["-W", "error"]
    if plugin_arguments():
        # "-p" names a module this process has imported already: pytest warns it
        # cannot rewrite its asserts, which it has none to need.
        warnings += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    before = set(threading.enumerate())
    result = pytester.runpytest_inprocess(
        *plugin_arguments(), *QUIET_PLUGINS, *NO_ASYNC_RUNNERS, *warnings, *arguments
    )
    left = [thread for thread in threading.enumerate() if thread not in before]
    for thread in left:
        thread.join(WAIT)
    assert [thread.name for thread in left if thread.is_alive()] == []
    return result
