"""The pytest plugin as a user meets it: test files written into a temporary project
and run by pytest (pytester), in process.  Covered: the five-line example, isolation
between tests, the server's scope (session by default, the smtpwire_server_scope ini
option), STARTTLS, implicit TLS and AUTH fixtures with smtp_client_context,
smtp_server_factory from a user's module-scoped fixture, sync and async tests, and
what a failed wait prints.

Every run must leave no server thread behind: :func:`run` checks it.  Those inner runs
have no plugin for async tests, so the async one runs its coroutine with asyncio.run.
"""

from __future__ import annotations

import re

import pytest

from plugin.runs import plugin_arguments, run

pytest_plugins = ["pytester"]  # here, not in a conftest: see conftest.py


# --- a user's first test ----------------------------------------------------------------------

FIVE_LINES = """
    import smtplib

    def test_welcome_mail(smtp_server):
        with smtplib.SMTP(*smtp_server.address) as client:
            client.sendmail("app@example.com", ["ann@example.com"], "Subject: Welcome\\n\\nHi")
        [message] = smtp_server.inbox.wait_for(1, to="ann@example.com")
        assert message.subject == "Welcome"
"""


def test_the_five_line_example(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=FIVE_LINES)
    run(pytester).assert_outcomes(passed=1)


def test_the_five_line_example_in_a_new_interpreter(pytester: pytest.Pytester) -> None:
    """The plugin found as an installed user finds it (or through ``-p``), in a fresh
    process, nothing imported beforehand."""
    pytester.makepyfile(test_user=FIVE_LINES)
    result = pytester.runpytest_subprocess(*plugin_arguments(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_nothing(): pass")
    result = run(pytester, "--fixtures")
    assert result.ret == 0
    names = (
        "smtp_server",
        "smtp_server_starttls",
        "smtp_server_tls",
        "smtp_server_auth",
        "smtp_server_factory",
        "smtp_certificates",
        "smtp_client_context",
    )
    for name in names:
        assert re.search(rf"^{name}( \[[a-z]+ scope\])? -- ", result.stdout.str(), re.M), name


def test_a_failed_wait_says_what_arrived(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import smtplib

        def test_waits_for_the_wrong_recipient(smtp_server):
            with smtplib.SMTP(*smtp_server.address) as client:
                client.sendmail("app@example.com", ["bob@example.com"], "Subject: For Bob\\n\\n")
            smtp_server.inbox.wait_for(1, to="ann@example.com", timeout=0.2)
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*InboxTimeout*", "*For Bob*"])


# --- isolation and scope -------------------------------------------------------------------------


def test_each_test_starts_with_an_empty_inbox_and_no_rules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import smtplib
        import pytest

        MESSAGE = "Subject: hi\\r\\n\\r\\nx\\r\\n"

        @pytest.mark.parametrize("kind", ["first", "second"])
        def test_leaves_mail_and_rules_behind(smtp_server, kind):
            assert len(smtp_server.inbox) == 0
            assert smtp_server.faults.rules == []
            with smtplib.SMTP(*smtp_server.address) as client:
                client.sendmail("app@example.com", ["ann@example.com"], MESSAGE)
            smtp_server.inbox.wait_for(1)
            smtp_server.faults.reply(550, "5.7.1 Refused", command="MAIL")
            smtp_server.faults.drop(command="CONNECT")
            assert kind == "second", "fails: the next test must be isolated all the same"

        def test_the_next_one_sees_none_of_it(smtp_server):
            assert len(smtp_server.inbox) == 0
            assert smtp_server.faults.rules == []
            with smtplib.SMTP(*smtp_server.address) as client:
                client.sendmail("app@example.com", ["ann@example.com"], MESSAGE)
            assert len(smtp_server.inbox.wait_for(1)) == 1
        """
    )
    run(pytester).assert_outcomes(passed=2, failed=1)


SCOPE_PROJECT = {
    "conftest": """
        import pathlib
        import pytest

        RECORD = pathlib.Path(__file__).parent / "servers.txt"

        @pytest.fixture
        def record(request, smtp_server, smtp_server_starttls):
            yield
            with RECORD.open("a") as file:
                for kind, server in (("plain", smtp_server), ("starttls", smtp_server_starttls)):
                    file.write(f"{request.node.name} {kind} {id(server)} {server.port}\\n")
        """,
    "test_a": """
        class TestOne:
            def test_1(self, record):
                pass

            def test_2(self, record):
                pass

        class TestTwo:
            def test_3(self, record):
                pass
        """,
    "test_b": """
        def test_4(record):
            pass
        """,
}

EXPECTED_GROUPS = {
    "session": [["test_1", "test_2", "test_3", "test_4"]],
    "package": [["test_1", "test_2", "test_3", "test_4"]],
    "module": [["test_1", "test_2", "test_3"], ["test_4"]],
    "class": [["test_1", "test_2"], ["test_3"], ["test_4"]],
    "function": [["test_1"], ["test_2"], ["test_3"], ["test_4"]],
}


def _servers(pytester: pytest.Pytester) -> dict[str, dict[str, tuple[int, int]]]:
    """kind -> test name -> (server identity, port), from the project's record."""
    servers: dict[str, dict[str, tuple[int, int]]] = {"plain": {}, "starttls": {}}
    for line in (pytester.path / "servers.txt").read_text().splitlines():
        test, kind, identity, port = line.split()
        servers[kind][test] = (int(identity), int(port))
    return servers


@pytest.mark.parametrize(
    ("scope", "how"),
    [
        ("session", "default"),
        ("package", "-o"),
        ("module", "-o"),
        ("class", "-o"),
        ("function", "-o"),
        ("function", "ini"),
    ],
)
def test_server_scope(pytester: pytest.Pytester, scope: str, how: str) -> None:
    pytester.makepyfile(**SCOPE_PROJECT)
    arguments = ["--strict-config"]
    if how == "-o":
        arguments += ["-o", f"smtpwire_server_scope={scope}"]
    elif how == "ini":
        pytester.makeini(f"[pytest]\nsmtpwire_server_scope = {scope}\n")
    run(pytester, *arguments).assert_outcomes(passed=4)
    servers = _servers(pytester)
    for kind in ("plain", "starttls"):
        by_server: dict[int, list[str]] = {}
        for test, (identity, _) in sorted(servers[kind].items()):
            by_server.setdefault(identity, []).append(test)
        assert sorted(by_server.values()) == EXPECTED_GROUPS[scope], kind
        # Each server keeps one port for all its tests. (Two servers of a narrower
        # scope never run at once, so the system may hand the second the port the
        # first has just given back: distinct ports are not asserted.)
        ports_of: dict[int, set[int]] = {}
        for identity, port in servers[kind].values():
            ports_of.setdefault(identity, set()).add(port)
        assert all(len(ports) == 1 for ports in ports_of.values()), ports_of
    # The plaintext server and the STARTTLS one are two servers.
    assert servers["plain"]["test_1"][1] != servers["starttls"]["test_1"][1]


@pytest.mark.parametrize("value", ["sometimes", "Session", "module,function"])
def test_an_invalid_scope_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(test_user="def test_nothing(smtp_server): pass")
    result = run(pytester, "-o", f"smtpwire_server_scope={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*smtpwire_server_scope*"])


# --- TLS and AUTH ---------------------------------------------------------------------------------


def test_tls_fixtures_with_the_client_context(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import smtplib
        import socket
        import ssl
        import pytest

        MESSAGE = "Subject: secret\\r\\n\\r\\nsh\\r\\n"

        def test_starttls(smtp_server_starttls, smtp_client_context):
            server = smtp_server_starttls
            with smtplib.SMTP(*server.address) as client:
                client.starttls(context=smtp_client_context)
                client.sendmail("app@example.com", ["ann@example.com"], MESSAGE)
            [message] = server.inbox.wait_for(1)
            assert message.tls and message.tls_version.startswith("TLSv1.")

        def test_starttls_needs_the_test_ca(smtp_server_starttls):
            with smtplib.SMTP(*smtp_server_starttls.address) as client:
                with pytest.raises(ssl.SSLCertVerificationError):
                    client.starttls(context=ssl.create_default_context())

        def test_implicit_tls(smtp_server_tls, smtp_client_context):
            server = smtp_server_tls
            with smtplib.SMTP_SSL(*server.address, context=smtp_client_context) as client:
                client.sendmail("app@example.com", ["ann@example.com"], MESSAGE)
            [message] = server.inbox.wait_for(1)
            assert message.tls

        def test_implicit_tls_checks_the_name(smtp_server_tls, smtp_client_context):
            with socket.create_connection(smtp_server_tls.address) as raw:
                with pytest.raises(ssl.SSLCertVerificationError):
                    smtp_client_context.wrap_socket(raw, server_hostname="mail.example.com")

        def test_the_certificates(smtp_certificates, smtp_server_tls):
            assert smtp_certificates.ca_file.is_file()
            context = ssl.create_default_context(cafile=str(smtp_certificates.ca_file))
            with smtplib.SMTP_SSL(*smtp_server_tls.address, context=context) as client:
                assert client.noop()[0] == 250
        """
    )
    run(pytester).assert_outcomes(passed=5)


def test_auth_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import base64
        import smtplib
        import pytest

        MESSAGE = "Subject: hi\\r\\n\\r\\nhello\\r\\n"

        def test_login(smtp_server_auth, smtp_client_context):
            server = smtp_server_auth
            credentials = f"\\0{server.username}\\0{server.password}".encode()
            with smtplib.SMTP(*server.address) as client:
                client.ehlo()
                code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(credentials).decode())
                assert code == 530  # STARTTLS first
                client.starttls(context=smtp_client_context)
                client.ehlo()
                with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
                    client.login(server.username, server.password + "!")
                assert caught.value.smtp_code == 535
                client.login(server.username, server.password)
                client.sendmail(server.username, ["ann@example.com"], MESSAGE)
            [message] = server.inbox.wait_for(1)
            assert message.authenticated and message.auth_login == server.username
            assert all(server.password not in line for line in message.transcript)
        """
    )
    run(pytester).assert_outcomes(passed=1)


# --- smtp_server_factory --------------------------------------------------------------------------


def test_factory_from_a_module_scoped_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import smtplib
        import pytest

        PORTS = []

        @pytest.fixture(scope="module")
        def small_server(smtp_server_factory):
            server = smtp_server_factory(data_size_limit=1024, hostname="mx.test")
            yield server
            server.stop()

        @pytest.fixture(scope="module")
        def tls_server(smtp_server_factory):
            # Never stopped here: the factory stops it at the end of the session.
            return smtp_server_factory(tls="starttls")

        def test_plain_first(smtp_server):
            assert smtp_server.tls == "none"  # the factory exists before any TLS server

        @pytest.mark.parametrize("run", [1, 2])
        def test_small_server(small_server, run):
            PORTS.append(small_server.port)
            with smtplib.SMTP(*small_server.address) as client:
                code, reply = client.ehlo()
                assert reply.startswith(b"mx.test")
                assert client.esmtp_features["size"] == "1024"
            assert len(set(PORTS)) == 1  # one server for the module

        def test_tls_server_trusts_the_session_ca(tls_server, smtp_client_context):
            with smtplib.SMTP(*tls_server.address) as client:
                client.starttls(context=smtp_client_context)
                client.sendmail("app@example.com", ["ann@example.com"], "Subject: x\\r\\n\\r\\n")
            assert tls_server.inbox.wait_for(1)[0].tls
        """
    )
    run(pytester).assert_outcomes(passed=4)


# --- sync and async tests ----------------------------------------------------------------------


def test_sync_and_async_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import asyncio
        import smtplib
        import threading

        from smtpwire.client import SMTP

        def test_sent_by_a_worker_thread(smtp_server):
            def worker():
                with smtplib.SMTP(*smtp_server.address) as client:
                    for number in range(3):
                        client.sendmail(
                            "app@example.com", ["ops@example.com"],
                            f"Subject: job {number}\\r\\n\\r\\ndone\\r\\n",
                        )

            thread = threading.Thread(target=worker)
            thread.start()
            try:
                messages = smtp_server.inbox.wait_for(
                    2, predicate=lambda m: m.subject != "job 0", timeout=10
                )
            finally:
                thread.join(10)
            assert [m.subject for m in messages] == ["job 1", "job 2"]

        def test_sent_by_a_task(smtp_server_auth):
            server = smtp_server_auth

            async def main():
                async def send_later():
                    async with SMTP(**server.client_kwargs()) as client:
                        message = b"Subject: hi\\r\\n\\r\\nhello\\r\\n"
                        await client.sendmail("app@example.com", ["ann@example.com"], message)

                task = asyncio.create_task(send_later())
                try:
                    return await server.inbox.wait_for_async(1, to="ann@example.com", timeout=10)
                finally:
                    await task

            [message] = asyncio.run(main())
            assert message.subject == "hi"
            assert message.tls and message.authenticated
        """
    )
    run(pytester).assert_outcomes(passed=2)
