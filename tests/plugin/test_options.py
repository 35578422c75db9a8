"""The plugin's ini options and environment variables (docs/testing.md, "Settings"),
each shown to take effect in a pytest run of its own (pytester, in process): a fixed
port for smtp_server and for smtp_server_factory, with a one-line error when it is
taken; the listening address, the server's name, the TLS mode, the account and
whether AUTH is required; the variables overriding the ini file; wrong values
refused when pytest starts.

A fixed port is found by binding port 0 on 127.0.0.1, reading it and closing the
socket; another process may take it before the inner run does, so such a run is
retried, a bounded number of times, on a new port when its error says the port is in
use.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from plugin.runs import run

pytest_plugins = ["pytester"]  # here, not in a conftest: see conftest.py

PORT_ATTEMPTS = 5
TAKEN = "already in use"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def on_a_free_port(attempt: Callable[[int], pytest.RunResult]) -> tuple[int, pytest.RunResult]:
    """``attempt(port)`` on a port free a moment ago, again on another one when the
    port was taken in between."""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        result = attempt(port)
        if TAKEN not in result.stdout.str():
            return port, result
    pytest.fail(f"no free port in {PORT_ATTEMPTS} attempts")


# --- the port -----------------------------------------------------------------------------

WRITES_THE_PORT = """
    import pathlib
    import smtplib

    def test_port(smtp_server):
        with smtplib.SMTP(*smtp_server.address) as client:
            client.sendmail("app@example.com", ["ann@example.com"], "Subject: hi\\n\\nx")
        assert smtp_server.inbox.last.subject == "hi"
        pathlib.Path("port").write_text(str(smtp_server.port))
"""


def test_the_port_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=WRITES_THE_PORT)

    def attempt(port: int) -> pytest.RunResult:
        pytester.makeini(f"[pytest]\nsmtpwire_port = {port}\n")
        return run(pytester)

    port, result = on_a_free_port(attempt)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "port").read_text() == str(port)


def test_the_port_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_user=WRITES_THE_PORT)
    pytester.makeini("[pytest]\nsmtpwire_port = 1\n")  # the variable wins

    def attempt(port: int) -> pytest.RunResult:
        monkeypatch.setenv("SMTPWIRE_TEST_PORT", str(port))
        return run(pytester)

    port, result = on_a_free_port(attempt)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "port").read_text() == str(port)


def test_the_port_is_kept_when_the_server_restarts_for_each_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_user="""
        def test_1(smtp_server):
            with open("ports", "a") as ports:
                ports.write(f"{smtp_server.port}\\n")

        def test_2(smtp_server):
            with open("ports", "a") as ports:
                ports.write(f"{smtp_server.port}\\n")
        """
    )

    def attempt(port: int) -> pytest.RunResult:
        (pytester.path / "ports").unlink(missing_ok=True)
        pytester.makeini(f"[pytest]\nsmtpwire_port = {port}\nsmtpwire_server_scope = function\n")
        return run(pytester)

    port, result = on_a_free_port(attempt)
    result.assert_outcomes(passed=2)
    assert (pytester.path / "ports").read_text().split() == [str(port), str(port)]


def test_a_taken_port_is_one_line_naming_the_port_and_the_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_user="def test_port(smtp_server): pass")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pytester.makeini(f"[pytest]\nsmtpwire_port = {port}\n")
        from_ini = run(pytester)
        monkeypatch.setenv("SMTPWIRE_TEST_PORT", str(port))
        from_env = run(pytester)
    for result, origin in (
        (from_ini, f"smtpwire_port = {port}"),
        (from_env, f"SMTPWIRE_TEST_PORT={port}"),
    ):
        result.assert_outcomes(errors=1)
        message = (
            f"smtpwire test server: port {port} on 127.0.0.1 is already in use (set by {origin})"
        )
        # The error section shows the message as one line of its own; pytest >= 9.1 also
        # repeats it in the short summary ("ERROR test_user.py::test_port - Failed: ...").
        lines = [line for line in result.outlines if message in line]
        assert lines.count(message) == 1
        assert all(line == message or line.startswith("ERROR test_user.py::") for line in lines)
        assert "Traceback" not in result.stdout.str()


def test_the_factory_takes_a_port(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(WRITES_THE_PORT.replace("smtp_server", "fixed"))

    def attempt(port: int) -> pytest.RunResult:
        pytester.makeconftest(
            f"""
            import pytest

            @pytest.fixture
            def fixed(smtp_server_factory):
                server = smtp_server_factory(port={port})
                yield server
                server.stop()
            """
        )
        return run(pytester)

    port, result = on_a_free_port(attempt)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "port").read_text() == str(port)


def test_the_factory_on_a_taken_port(pytester: pytest.Pytester) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pytester.makepyfile(
            f"""
            import errno
            import pytest
            from smtpwire.server.testing import ListenError

            def test_taken(smtp_server_factory):
                with pytest.raises(ListenError) as caught:
                    smtp_server_factory(port={port})
                assert caught.value.errno == errno.EADDRINUSE
                assert str(caught.value) == (
                    "smtpwire test server: port {port} on 127.0.0.1 is already in use "
                    "(set by smtp_server_factory(port={port}))"
                )
            """
        )
        result = run(pytester)
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("value", ["http", "-1", "65536"])
def test_a_wrong_port_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(test_user="def test_nothing(): pass")
    pytester.makeini(f"[pytest]\nsmtpwire_port = {value}\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: smtpwire_port = {value}: expected a port number from 0 (a free port) to 65535"]
    )


# --- address and name ---------------------------------------------------------------------


def test_the_host_is_where_the_servers_listen(pytester: pytest.Pytester) -> None:
    """An address that is not this machine's (TEST-NET-1, RFC 5737): the server cannot
    listen there, which shows the setting reached it without binding anything."""
    pytester.makepyfile(test_user="def test_port(smtp_server): pass")
    pytester.makeini("[pytest]\nsmtpwire_host = 192.0.2.1\n")
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["smtpwire test server: cannot listen on 192.0.2.1 (set by smtpwire_host = 192.0.2.1): *"]
    )


def test_the_host_and_hostname_of_every_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPWIRE_TEST_HOSTNAME", "mx.example.test")
    pytester.makeini("[pytest]\nsmtpwire_host = 127.0.0.1\nsmtpwire_hostname = ignored.test\n")
    pytester.makepyfile(
        test_user="""
        import smtplib
        import pytest

        @pytest.mark.parametrize("name", ["smtp_server", "smtp_server_starttls", "factory"])
        def test_greeting(request, smtp_server_factory, name):
            if name == "factory":
                server = smtp_server_factory()
            else:
                server = request.getfixturevalue(name)
            assert server.host == "127.0.0.1"
            with smtplib.SMTP(*server.address) as client:
                code, text = client.ehlo()
            assert (code, text.splitlines()[0]) == (250, b"mx.example.test")
            if name == "factory":
                server.stop()
        """
    )
    run(pytester).assert_outcomes(passed=3)


# --- TLS and AUTH -------------------------------------------------------------------------


def test_starttls(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsmtpwire_tls = starttls\n")
    pytester.makepyfile(
        test_user="""
        import smtplib

        def test_starttls(smtp_server, smtp_client_context):
            assert smtp_server.tls == "starttls"
            with smtplib.SMTP(*smtp_server.address) as client:
                client.starttls(context=smtp_client_context)
                client.sendmail("app@example.com", ["ann@example.com"], "Subject: s\\n\\nx")
            assert smtp_server.inbox.last.tls
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_implicit_tls(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTPWIRE_TEST_TLS", "implicit")
    pytester.makepyfile(
        test_user="""
        import smtplib

        def test_implicit(smtp_server, smtp_client_context):
            assert smtp_server.tls == "implicit"
            with smtplib.SMTP_SSL(*smtp_server.address, context=smtp_client_context) as client:
                client.sendmail("app@example.com", ["ann@example.com"], "Subject: s\\n\\nx")
            assert smtp_server.inbox.last.tls
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_a_wrong_tls_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_nothing(): pass")
    pytester.makeini("[pytest]\nsmtpwire_tls = ssl\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: smtpwire_tls = ssl: expected one of none, starttls, implicit"]
    )


LOGS_IN = """
    import smtplib
    import pytest

    def test_login(smtp_server, smtp_client_context):
        assert (smtp_server.username, smtp_server.password) == ("ann", "s3cret")
        with smtplib.SMTP(*smtp_server.address) as client:
            if smtp_server.tls == "starttls":
                client.starttls(context=smtp_client_context)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("ann", "wrong")
            client.login("ann", "s3cret")
            client.sendmail("ann@example.com", ["bob@example.com"], "Subject: a\\r\\n\\r\\nx\\r\\n")
        assert smtp_server.inbox.last.auth_login == "ann"
"""


def test_the_account_in_plaintext(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsmtpwire_login = ann\nsmtpwire_password = s3cret\n")
    pytester.makepyfile(test_user=LOGS_IN)
    run(pytester).assert_outcomes(passed=1)


def test_the_account_from_the_environment_with_starttls(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPWIRE_TEST_LOGIN", "ann")
    monkeypatch.setenv("SMTPWIRE_TEST_PASSWORD", "s3cret")
    monkeypatch.setenv("SMTPWIRE_TEST_TLS", "starttls")
    pytester.makepyfile(test_user=LOGS_IN)
    run(pytester).assert_outcomes(passed=1)


SENDS_WITHOUT_AUTH = """
    import smtplib

    def test_without_auth(smtp_server, smtp_client_context):
        with smtplib.SMTP(*smtp_server.address) as client:
            client.starttls(context=smtp_client_context)
            client.sendmail("app@example.com", ["bob@example.com"], "Subject: a\\r\\n\\r\\nx\\r\\n")
"""


@pytest.mark.parametrize(("required", "outcome"), [("", "failed"), ("false", "passed")])
def test_auth_required(pytester: pytest.Pytester, required: str, outcome: str) -> None:
    """With TLS and an account, AUTH is required before MAIL unless
    smtpwire_auth_required is false."""
    setting = f"smtpwire_auth_required = {required}\n" if required else ""
    pytester.makeini(f"[pytest]\nsmtpwire_tls = starttls\nsmtpwire_login = ann\n{setting}")
    pytester.makepyfile(test_user=SENDS_WITHOUT_AUTH)
    result = run(pytester)
    result.assert_outcomes(**{outcome: 1})
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*530*Authentication required*"])


def test_auth_required_in_plaintext_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPWIRE_TEST_AUTH_REQUIRED", "yes")
    pytester.makepyfile(test_user="def test_nothing(): pass")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: SMTPWIRE_TEST_AUTH_REQUIRED=yes needs smtpwire_tls starttls or implicit *"]
    )


def test_the_options_are_listed_in_help(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    for name in (
        "smtpwire_host",
        "smtpwire_port",
        "smtpwire_hostname",
        "smtpwire_tls",
        "smtpwire_login",
        "smtpwire_password",
        "smtpwire_auth_required",
    ):
        result.stdout.fnmatch_lines([f"  {name} (string):*"])
