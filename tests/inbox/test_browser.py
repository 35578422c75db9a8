"""The web inbox in a real browser: headless Chromium, driven by Selenium, against
the inbox's own web server and an SMTP server storing into it.

A mail sent with smtplib must appear in the open page without a reload, open
(and turn read), show its HTML body in a sandbox where its script does not run,
show the SMTP session that delivered it, let the browser download its attachment
byte for byte, and go away when deleted.

The servers are the ``live_inbox`` of tests/inbox/conftest.py (both on loopback,
port 0, stopped by the fixture).  Skipped, with the reason, when the inbox cannot
be imported, or when Debian's chromium / chromedriver are absent: nothing is
downloaded at test time (Selenium Manager is never asked).  Screenshots go to
``$SMTPWIRE_ARTIFACTS`` or the test's tmp_path; their paths are printed.
Downloads go to a directory under the test's tmp_path (Chrome's download prefs,
and the DevTools command ``Browser.setDownloadBehavior`` for headless mode).
"""

from __future__ import annotations

import json
import os
import secrets
import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("selenium", reason="selenium is not installed")
pytest.importorskip("smtpwire.server.inbox", reason="smtpwire.server.inbox cannot be imported")

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Upper bound of every wait in this module, in seconds.
WAIT = 15.0

SCRIPT_MARK = "untouched"
HOSTILE_HTML = f"""<!doctype html>
<html><head><title>mail</title></head>
<body>
<h1>Quarterly report</h1>
<p id="marker">{SCRIPT_MARK}</p>
<script>
document.getElementById("marker").textContent = "script ran";
try {{ window.parent.document.title = "pwned"; }} catch (e) {{}}
try {{ window.parent.document.body.dataset.pwned = "1"; }} catch (e) {{}}
</script>
<p id="after-script">end of body</p>
</body></html>
"""


# -- the servers ------------------------------------------------------------------------


class Stack:
    """The test's side of the servers: SMTP to send, HTTP to check."""

    def __init__(self, url: str, smtp_port: int) -> None:
        self.url = url
        self.smtp_port = smtp_port

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=WAIT) as response:  # noqa: S310
            return json.loads(response.read())

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=WAIT) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)

    def send(self, message: EmailMessage) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=WAIT) as client:
            client.send_message(message)


@pytest.fixture
def stack(live_inbox: Any) -> Stack:
    """An SMTP server storing into an inbox, and its web server (tests/inbox/conftest.py)."""
    return Stack(str(live_inbox.url).rstrip("/"), int(live_inbox.smtp_port))


# -- the browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian package chromium)")
    if not CHROMEDRIVER.exists():
        pytest.skip(f"{CHROMEDRIVER} is absent (Debian package chromium-driver)")
    asked: list[Any] = []

    def no_selenium_manager(self: Any, args: Any) -> dict[str, str]:
        asked.append(args)
        raise AssertionError("Selenium Manager was asked for a driver: nothing may be downloaded")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--window-size=1360,860",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Downloads land in a directory of the test run, without a prompt; each test that
    # downloads points them at its own directory (the ``downloads`` fixture).
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(tmp_path_factory.mktemp("downloads")),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
        },
    )
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's own sandbox refuses to run as root
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SeleniumManager, "binary_paths", no_selenium_manager)
        driver = webdriver.Chrome(
            options=options, service=Service(executable_path=str(CHROMEDRIVER))
        )
    try:
        assert asked == [], "Selenium Manager was invoked"
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    configured = os.environ.get("SMTPWIRE_ARTIFACTS")
    if not configured:
        return tmp_path
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def downloads(browser: webdriver.Chrome, tmp_path: Path) -> Path:
    """An empty directory of this test's where the browser's downloads now go.

    The prefs set at launch hold for the whole module; DevTools' download behaviour
    "allow" with a path (also obeyed in headless mode) points them here."""
    directory = tmp_path / "downloads"
    directory.mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior",
        {"behavior": "allow", "downloadPath": str(directory), "eventsEnabled": False},
    )
    return directory


@pytest.fixture
def page(browser: webdriver.Chrome, stack: Stack) -> Iterator[webdriver.Chrome]:
    """The inbox page, loaded, with its live stream connected; left before the
    servers stop."""
    page_errors(browser)  # what an earlier test left in the console is not this test's
    browser.get(stack.url + "/")
    wait_for(browser, lambda d: live_state(d) == "on", "the live stream to connect")
    wait_for(browser, lambda d: d.find_element(By.ID, "list-summary").text.endswith("messages"))
    yield browser
    browser.get("about:blank")


# -- helpers ----------------------------------------------------------------------------


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str = "") -> Any:
    # The list is redrawn as events come: an element found a moment ago may be gone.
    waiting = WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))
    return waiting.until(condition, f"timed out waiting for {what or 'the page'}")


def live_state(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "live-status").get_attribute("data-state"))


def row_subjects(driver: WebDriver) -> list[str]:
    """The list's subjects, read in one go (the list may be redrawn at any time)."""
    return list(
        driver.execute_script(
            "return Array.from(document.querySelectorAll('#message-list .row-subject'),"
            " (node) => node.textContent);"
        )
    )


def row_with_subject(driver: WebDriver, subject: str) -> WebElement | None:
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll('#message-list .message-row'))"
        ".find((row) => row.querySelector('.row-subject').textContent === arguments[0])"
        " || null;",
        subject,
    )
    return found if isinstance(found, WebElement) else None


def row_classes(driver: WebDriver, message_id: str) -> set[str]:
    classes = driver.execute_script(
        "const row = Array.from(document.querySelectorAll('#message-list .message-row'))"
        ".find((node) => node.dataset.id === arguments[0]);"
        " return row ? row.className : null;",
        message_id,
    )
    assert classes is not None, f"no row for {message_id}"
    return set(str(classes).split())


def mail(subject: str, *, html: str | None = None, attachment: bytes | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Alice Example <alice@example.com>"
    message["To"] = "Bob Example <bob@example.org>"
    message["Subject"] = subject
    message.set_content(f"Plain text of {subject}.\nSecond line.\n")
    if html is not None:
        message.add_alternative(html, subtype="html")
    if attachment is not None:
        message.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename="report.bin"
        )
    return message


def downloaded(driver: WebDriver, directory: Path, name: str) -> bytes:
    """The bytes of ``directory/name`` once the browser has finished writing it:
    the file is there and no partial download (``.crdownload``) is left."""

    def finished(_: WebDriver) -> bool:
        entries = {path.name for path in directory.iterdir()}
        return name in entries and not any(entry.endswith(".crdownload") for entry in entries)

    wait_for(driver, finished, f"the download of {name} into {directory}")
    assert sorted(path.name for path in directory.iterdir()) == [name]
    return (directory / name).read_bytes()


def page_errors(driver: webdriver.Chrome) -> list[str]:
    """The console's errors since the last call: script errors, failed requests."""
    read_log: Callable[[str], list[dict[str, Any]]] = driver.get_log  # untyped in selenium
    return [str(entry["message"]) for entry in read_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: WebDriver, directory: Path, name: str) -> Path:
    path = directory / name
    assert driver.save_screenshot(str(path)), f"no screenshot at {path}"
    return path


# -- the tests --------------------------------------------------------------------------


def test_mail_arrives_live_opens_sandboxed_and_is_deleted(
    page: webdriver.Chrome,
    stack: Stack,
    artifacts: Path,
    downloads: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    driver = page
    driver.execute_script("window.smtpwireSamePage = true;")
    title = driver.title
    subject = f'Report <b>{secrets.token_hex(4)}</b> & "friends"'
    payload = secrets.token_bytes(3000) + bytes(range(256))
    stack.send(mail(subject, html=HOSTILE_HTML, attachment=payload))

    # Live arrival: the row appears in the page that was already open.
    row = wait_for(driver, lambda d: row_with_subject(d, subject), "the new message's row")
    assert driver.execute_script("return window.smtpwireSamePage === true;"), "the page reloaded"
    assert row.find_elements(By.CSS_SELECTOR, ".row-subject b") == [], "subject parsed as HTML"
    message_id = str(row.get_attribute("data-id"))
    assert message_id
    assert "unread" in row_classes(driver, message_id)
    list_shot = screenshot(driver, artifacts, "inbox-list.png")

    # Opening it shows it and marks it read.
    row.click()
    wait_for(driver, lambda d: d.find_element(By.ID, "msg-subject").text == subject, "the view")
    wait_for(driver, lambda d: "unread" not in row_classes(d, message_id), "the row to turn read")
    listed = stack.api("/api/v1/messages?start=0&limit=50")["messages"]
    assert [m["Read"] for m in listed if m["ID"] == message_id] == [True]

    # The HTML body: in a sandbox without scripts or the page's origin; its script never ran.
    frame = wait_for(driver, lambda d: d.find_element(By.ID, "html-frame"), "the HTML iframe")
    sandbox = frame.get_attribute("sandbox")
    assert sandbox is not None, "the HTML iframe has no sandbox attribute"
    assert not {"allow-scripts", "allow-same-origin"} & set(sandbox.split()), sandbox
    driver.switch_to.frame(frame)
    try:
        wait_for(driver, lambda d: d.find_elements(By.ID, "after-script"), "the HTML body")
        assert driver.find_element(By.ID, "marker").text == SCRIPT_MARK
    finally:
        driver.switch_to.default_content()
    assert driver.title == title
    assert "pwned" not in driver.title
    assert driver.execute_script("return document.body.dataset.pwned;") is None
    message_shot = screenshot(driver, artifacts, "inbox-message.png")

    # The other tabs.
    driver.find_element(By.ID, "tab-text").click()
    wait_for(driver, lambda d: "Second line." in d.find_element(By.ID, "msg-text").text, "text")
    driver.find_element(By.ID, "tab-headers").click()
    wait_for(driver, lambda d: subject in d.find_element(By.ID, "msg-headers").text, "headers")
    driver.find_element(By.ID, "tab-raw").click()
    wait_for(driver, lambda d: "Content-Type: multipart/" in d.find_element(By.ID, "msg-raw").text)

    # The attachment's link: clicked, the browser downloads the very bytes that were sent.
    driver.find_element(By.ID, "tab-attachments").click()
    link = wait_for(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, "#msg-attachments a"), "attachments"
    )
    assert link.text == "report.bin"
    assert str(link.get_attribute("href")).startswith(f"{stack.url}/api/v1/message/{message_id}/")
    assert list(downloads.iterdir()) == []
    link.click()
    assert downloaded(driver, downloads, "report.bin") == payload

    # The message came over SMTP: the server has its session, and the tab shows it.
    assert stack.status(f"/api/smtpwire/message/{message_id}/session") == 200
    facts = stack.api(f"/api/smtpwire/message/{message_id}/session")
    assert facts["MailFrom"] == "alice@example.com"
    assert facts["RcptTo"] == ["bob@example.org"]
    session_tab = driver.find_element(By.ID, "tab-session")
    wait_for(driver, lambda d: session_tab.is_displayed(), "the session tab")
    session_tab.click()
    wait_for(
        driver,
        lambda d: "MAIL FROM" in d.find_element(By.ID, "session-transcript").text.upper(),
        "the transcript",
    )
    transcript = driver.find_element(By.ID, "session-transcript").text.upper()
    assert "RCPT TO" in transcript
    assert "DATA" in transcript

    # Deleting it takes the row away, and the message from the server.
    driver.find_element(By.ID, "msg-delete").click()
    wait_for(driver, lambda d: row_with_subject(d, subject) is None, "the row to go")
    assert not driver.find_element(By.ID, "message-view").is_displayed()
    assert stack.status(f"/api/v1/message/{message_id}") == 404

    assert page_errors(driver) == []

    with capsys.disabled():
        print(f"\nscreenshots: {list_shot} (message list), {message_shot} (message view)")


def test_search_and_delete_all(page: webdriver.Chrome, stack: Stack) -> None:
    driver = page
    token = secrets.token_hex(3)
    for subject in (f"apple pie {token}", f"banana bread {token}"):
        stack.send(mail(subject))
    wait_for(driver, lambda d: len(row_subjects(d)) == 2, "both rows")
    assert row_subjects(driver) == [f"banana bread {token}", f"apple pie {token}"]

    # A plain-text message without attachments: no HTML tab, no attachments tab.
    wait_for(driver, lambda d: row_with_subject(d, f"apple pie {token}"), "the row").click()
    wait_for(driver, lambda d: "apple pie" in d.find_element(By.ID, "msg-text").text, "text")
    assert driver.find_element(By.ID, "tab-text").get_attribute("aria-selected") == "true"
    assert not driver.find_element(By.ID, "tab-html").is_displayed()
    assert not driver.find_element(By.ID, "tab-attachments").is_displayed()

    search = driver.find_element(By.ID, "search-input")
    search.send_keys("subject:banana")
    driver.find_element(By.ID, "search-button").click()
    wait_for(driver, lambda d: row_subjects(d) == [f"banana bread {token}"], "the search result")

    # While searching, a new match shows up and a non-match does not.
    stack.send(mail(f"cherry tart {token}"))
    stack.send(mail(f"banana split {token}"))
    wait_for(
        driver,
        lambda d: row_subjects(d) == [f"banana split {token}", f"banana bread {token}"],
        "the live search result",
    )

    driver.find_element(By.ID, "search-clear").click()
    wait_for(driver, lambda d: len(row_subjects(d)) == 4, "the whole list again")

    # Delete all asks for a second click, then empties the list.
    delete_all = driver.find_element(By.ID, "delete-all")
    delete_all.click()
    assert len(row_subjects(driver)) == 4
    delete_all.click()
    wait_for(driver, lambda d: row_subjects(d) == [], "the list to empty")
    assert driver.find_element(By.ID, "list-empty").is_displayed()
    assert stack.api("/api/v1/messages")["total"] == 0
    assert page_errors(driver) == []
