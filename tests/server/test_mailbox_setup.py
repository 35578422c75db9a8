"""``Mailbox(dir)``: an existing empty directory (a mounted volume) becomes a
Maildir; a path that cannot hold one is refused when the handler is made, and by
the command line in one line, not at the first delivery."""

from __future__ import annotations

import email.message
import mailbox
import os
import sys
from pathlib import Path

import pytest

from smtpwire.server.handlers import Mailbox
from support.cli import run_cli

NOT_ROOT = pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root may write anywhere"
)


def a_message() -> email.message.Message:
    message = email.message.Message()
    message["Subject"] = "hello"
    message.set_payload("Hi.\n")
    return message


def test_an_existing_empty_directory_becomes_a_maildir(tmp_path: Path) -> None:
    handler = Mailbox(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cur", "new", "tmp"]
    handler.handle_message(a_message())
    [delivered] = list(mailbox.Maildir(tmp_path))
    assert delivered["Subject"] == "hello"


def test_a_missing_directory_is_made(tmp_path: Path) -> None:
    Mailbox(tmp_path / "Maildir").handle_message(a_message())
    assert len(mailbox.Maildir(tmp_path / "Maildir")) == 1


def test_an_existing_maildir_is_kept(tmp_path: Path) -> None:
    Mailbox(tmp_path).handle_message(a_message())
    (tmp_path / "cur").rmdir()  # a folder gone missing is made again
    handler = Mailbox(tmp_path)
    assert (tmp_path / "cur").is_dir()
    assert len(handler.mailbox) == 1


def test_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mail"
    path.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="the Maildir is not a directory"):
        Mailbox(path)


def test_a_maildir_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "new").write_text("")
    with pytest.raises(NotADirectoryError, match="a Maildir folder is not a directory"):
        Mailbox(tmp_path)


@NOT_ROOT
def test_a_directory_the_server_cannot_write_is_refused(tmp_path: Path) -> None:
    Mailbox(tmp_path)
    (tmp_path / "new").chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="the Maildir is not writable"):
            Mailbox(tmp_path)
    finally:
        (tmp_path / "new").chmod(0o700)


@NOT_ROOT
def test_an_unwritable_empty_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(0o500)
    try:
        with pytest.raises(PermissionError):
            Mailbox(locked)
    finally:
        locked.chmod(0o700)


def test_the_command_line_refuses_a_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mail"
    path.write_text("")
    result = run_cli("-n", "-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Mailbox", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "smtpwire-server: error: cannot create the handler: "
        f"[Errno 20] the Maildir is not a directory: '{path}'"
    ]


@NOT_ROOT
def test_the_command_line_refuses_an_unwritable_directory_in_one_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        result = run_cli(
            "-n", "-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Mailbox", str(tmp_path)
        )
    finally:
        tmp_path.chmod(0o700)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("smtpwire-server: error: cannot create the handler: [Errno 13] ")
