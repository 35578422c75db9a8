"""The test server's inbox over HTTP (``SMTPTestServer(web=True)``, ``web_url``;
docs/testing.md, "From another process"): used directly, a message sent over SMTP
is in the Python inbox and in the mailpit-compatible API, the wait endpoint answers
when it arrives, the HTTP side stops with the server; through the plugin (pytester,
in process), the ``smtpwire_web`` ini option and ``SMTPWIRE_TEST_WEB`` variable,
``smtp_server_factory(web=True)``, isolation between tests, and without aiohttp one
line of error where web is asked for and nothing else changed."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from plugin.helpers import WAIT, StartServer, send
from plugin.runs import run
from smtpwire.server.testing import SMTPTestServer, WebInboxUnavailable

pytest_plugins = ["pytester"]  # here, not in a conftest: see conftest.py

pytest.importorskip("aiohttp", reason="the web inbox needs aiohttp")


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=WAIT) as response:  # noqa: S310 - loopback
        return json.load(response)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


# --- used directly ---------------------------------------------------------------------------


def test_a_message_is_in_the_inbox_and_in_the_api(start_server: StartServer) -> None:
    server = start_server(web=True)
    assert server.web_url.startswith("http://127.0.0.1:")
    assert not server.web_url.endswith(":0")
    send(server, "Report", text="All good.")
    # A client holding its 250 finds the message over HTTP too: no wait needed.
    listing = get(f"{server.web_url}/api/v1/messages")
    assert listing["total"] == 1
    [summary] = listing["messages"]
    assert summary["Subject"] == "Report"
    message = get(f"{server.web_url}/api/v1/message/{summary['ID']}")
    assert message["Text"] == "All good.\n"
    assert message["Bcc"] == [{"Name": "", "Address": "ann@example.com"}]  # no To header
    assert server.inbox.last.subject == "Report"
    session = get(f"{server.web_url}/api/smtpwire/message/{summary['ID']}/session")
    assert session["HELO"] == "client.test"
    assert session["Transcript"][-1] == "C: <message, 53 octets>"


def test_the_wait_endpoint_answers_when_the_message_arrives(start_server: StartServer) -> None:
    server = start_server(web=True)
    wait = f"{server.web_url}/api/smtpwire/wait?count=1"
    assert status_of(f"{wait}&timeout=0") == 408  # nothing yet: it does not answer early
    send(server, "hi")
    assert get(f"{wait}&timeout=10") == {"count": 1}
    assert get(f"{server.web_url}/api/smtpwire/wait?count=1&to=ann@example.com") == {"count": 1}


def test_the_ui_is_served(start_server: StartServer) -> None:
    server = start_server(web=True)
    with urllib.request.urlopen(server.web_url + "/", timeout=WAIT) as response:  # noqa: S310
        assert response.headers.get_content_type() == "text/html"


def test_reset_empties_both_inboxes(start_server: StartServer) -> None:
    server = start_server(web=True)
    send(server)
    server.reset()
    assert len(server.inbox) == 0
    assert get(f"{server.web_url}/api/v1/messages")["total"] == 0


def test_the_http_side_stops_with_the_server(start_server: StartServer) -> None:
    server = start_server(web=True)
    url = server.web_url
    assert "web=http://127.0.0.1:" in repr(server)
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=WAIT)  # noqa: S310 - nobody listens
    with pytest.raises(RuntimeError, match="web=True"):
        _ = server.web_url


def test_without_web_there_is_no_url(server: SMTPTestServer) -> None:
    with pytest.raises(RuntimeError, match="does not serve its inbox over HTTP"):
        _ = server.web_url


def test_without_aiohttp_web_is_one_line_of_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # find_spec: not installed
    with pytest.raises(WebInboxUnavailable) as caught:
        SMTPTestServer(web=True)
    assert "\n" not in str(caught.value)
    assert "aiohttp" in str(caught.value)
    assert "smtpwire-server[web]" in str(caught.value)
    with SMTPTestServer() as server:  # the rest works as before
        send(server)
        assert len(server.inbox) == 1


# --- through the plugin ----------------------------------------------------------------------

USES_THE_WEB_INBOX = """
    import json
    import smtplib
    import urllib.request

    def get(url):
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def test_sent(FIXTURE):
        server = FIXTURE
        if server.tls == "implicit":
            client = smtplib.SMTP_SSL(*server.address, context=server.client_context(), timeout=10)
        else:
            client = smtplib.SMTP(*server.address, timeout=10)
        with client:
            if server.tls == "starttls":
                client.starttls(context=server.client_context())
            if server.username:
                client.login(server.username, server.password)
            client.sendmail("app@example.com", ["ann@example.com"], "Subject: hi\\n\\nx")
        assert get(server.web_url + "/api/smtpwire/wait?count=1") == {"count": 1}
        [summary] = get(server.web_url + "/api/v1/messages")["messages"]
        assert get(server.web_url + "/api/v1/message/" + summary["ID"])["Subject"] == "hi"
        assert server.inbox.last.subject == "hi"
        server.faults.reply(550, command="VRFY")
        assert len(get(server.web_url + "/api/smtpwire/faults")["faults"]) == 1

    def test_isolated(FIXTURE):
        assert get(FIXTURE.web_url + "/api/v1/messages")["total"] == 0
        assert get(FIXTURE.web_url + "/api/smtpwire/faults")["faults"] == []
"""


@pytest.mark.parametrize("fixture", ["smtp_server", "smtp_server_starttls", "smtp_server_auth"])
def test_the_ini_option(pytester: pytest.Pytester, fixture: str) -> None:
    pytester.makeini("[pytest]\nsmtpwire_web = true\n")
    pytester.makepyfile(test_user=USES_THE_WEB_INBOX.replace("FIXTURE", fixture))
    run(pytester).assert_outcomes(passed=2)


def test_the_environment_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nsmtpwire_web = false\n")  # the variable wins
    monkeypatch.setenv("SMTPWIRE_TEST_WEB", "1")
    pytester.makepyfile(test_user=USES_THE_WEB_INBOX.replace("FIXTURE", "smtp_server_tls"))
    run(pytester).assert_outcomes(passed=2)


def test_the_factory(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def server(smtp_server_factory):
            server = smtp_server_factory(web=True)
            yield server
            server.stop()
        """
    )
    pytester.makepyfile(
        test_sent=USES_THE_WEB_INBOX.replace("FIXTURE", "server"),
        test_plain="""
        import pytest

        def test_without_web(smtp_server, smtp_server_factory):
            for plain in (smtp_server, smtp_server_factory()):
                with pytest.raises(RuntimeError, match="web=True"):
                    plain.web_url
        """,
    )
    run(pytester).assert_outcomes(passed=3)


def test_a_wrong_value_stops_pytest(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsmtpwire_web = maybe\n")
    pytester.makepyfile(test_user="def test_nothing():\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*smtpwire_web = maybe: expected true or false*"])


def test_without_aiohttp_only_the_servers_asking_for_web_fail(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    pytester.makeini("[pytest]\nsmtpwire_web = true\n")
    pytester.makepyfile(
        test_user="""
        def test_asks_for_web(smtp_server):
            pass

        def test_does_not(smtp_server_factory):
            server = smtp_server_factory()
            server.stop()

        def test_no_server():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*smtpwire test server: web=True needs aiohttp, which is not installed*"]
    )
    assert "Traceback" not in result.stdout.str()
