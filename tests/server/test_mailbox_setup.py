"""``Mailbox(dir)``: an existing empty directory (a mounted volume) becomes a
Maildir; a path that cannot hold one is refused when the handler is made, and by
the command line in one line, not at the first delivery.

Root may write anywhere, so a directory "the server cannot write" means, for a
server started as root, one that ``nobody`` cannot write: the command line
switches to ``nobody`` (without ``-n``) after building the handler.  Run as root
(as CI is), the not-writable tests check that path through a real command line;
run as anyone else, ``Mailbox()`` itself and ``-n``.
"""

from __future__ import annotations

import email.message
import mailbox
import os
import shutil
import smtplib
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpwire.server.handlers import Mailbox
from support.cli import MESSAGE, WAIT, ServerProcess, run_cli

POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
ROOT = sys.platform != "win32" and os.geteuid() == 0
MAILBOX = "smtpwire.server.handlers.Mailbox"
#: A user id that is neither root's nor nobody's: the owner of "someone else's" Maildir.
STRANGER = 4242


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


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """Where a test makes its Maildir: ``tmp_path``, or for root a directory that
    ``nobody`` can reach (pytest's own base directory is root's alone)."""
    if not ROOT:
        yield tmp_path
        return
    made = Path(tempfile.mkdtemp())
    try:
        made.chmod(0o755)
        for directory in made.parents:
            if not directory.stat().st_mode & stat.S_IXOTH:
                pytest.skip(f"nobody cannot reach {made} ({directory} is closed)")
        yield made
    finally:
        shutil.rmtree(made)


def refused_for_nobody(maildir: Path, folder: Path, *options: str) -> None:
    """As root without ``-n``: the command line refuses the Maildir at start-up in
    one line that names the folder and the user, and tells how to get out."""
    result = run_cli("-l", "127.0.0.1:0", *options, "-c", MAILBOX, str(maildir))
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"smtpwire-server: error: user nobody cannot write the Maildir: '{folder}' "
    ), line
    assert "-n" in line
    assert "nobody" in line.partition(f"'{folder}'")[2]  # the way out: give it to nobody


@POSIX_ONLY
def test_a_directory_the_server_cannot_write_is_refused(base: Path) -> None:
    Mailbox(base)
    (base / "new").chmod(0o500)
    try:
        if ROOT:
            # Root's Maildir is handed to nobody, who still cannot write new/.
            refused_for_nobody(base, base / "new")
        else:
            with pytest.raises(PermissionError, match="the Maildir is not writable"):
                Mailbox(base)
    finally:
        (base / "new").chmod(0o700)


@POSIX_ONLY
def test_an_unwritable_empty_directory_is_refused(base: Path) -> None:
    locked = base / "locked"
    if ROOT:
        # Someone else's directory (root does not hand it over): nobody cannot
        # enter it, although root could make the Maildir's folders there.
        locked.mkdir(0o700)
        os.chown(locked, STRANGER, STRANGER)
        refused_for_nobody(locked, locked / "tmp")
        return
    locked.mkdir(0o500)
    try:
        with pytest.raises(PermissionError):
            Mailbox(locked)
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(not ROOT, reason="root only: the switch to nobody")
def test_as_root_someone_elses_maildir_is_refused_at_start_up(base: Path) -> None:
    """The audit's case: a whole Maildir of another user, mode 0700.  Root can
    write it, so it used to be accepted, and then every message got 451."""
    box = base / "box"
    Mailbox(box)
    for directory in (box, box / "tmp", box / "new", box / "cur"):
        os.chown(directory, STRANGER, STRANGER)
    refused_for_nobody(box, box / "tmp")


@pytest.mark.skipif(not ROOT, reason="root only: the switch to nobody")
def test_as_root_with_workers_it_is_refused_once_not_by_every_worker(base: Path) -> None:
    """The supervisor stays root; it checks for its workers before starting any,
    rather than each failing and being restarted until it gives up."""
    box = base / "box"
    box.mkdir(0o700)
    os.chown(box, STRANGER, STRANGER)
    refused_for_nobody(box, box / "tmp", "--workers", "2")


@pytest.mark.skipif(not ROOT, reason="root only: the switch to nobody")
def test_as_root_with_workers_a_maildir_root_made_is_handed_over(base: Path) -> None:
    """The supervisor's check does not refuse what the workers would hand over."""
    nobody = pytest.importorskip("pwd").getpwnam("nobody")
    box = base / "box"
    server = ServerProcess("-l", "127.0.0.1:0", "--workers", "2", "-c", MAILBOX, str(box))
    try:
        [(host, port)] = server.addresses()
        with smtplib.SMTP(host, port, timeout=WAIT) as client:
            assert client.sendmail("anne@example.com", ["bart@example.com"], MESSAGE) == {}
        status, _, stderr = server.stop()
    finally:
        server.kill()
    assert status == 0, stderr
    assert len(mailbox.Maildir(box)) == 1
    assert (box / "new").stat().st_uid == nobody.pw_uid  # handed over


def test_the_command_line_refuses_a_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mail"
    path.write_text("")
    result = run_cli("-n", "-l", "127.0.0.1:0", "-c", "smtpwire.server.handlers.Mailbox", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "smtpwire-server: error: cannot create the handler: "
        f"[Errno 20] the Maildir is not a directory: '{path}'"
    ]


@POSIX_ONLY
def test_the_command_line_refuses_an_unwritable_directory_in_one_line(tmp_path: Path) -> None:
    if ROOT:
        # Inside a directory only root may enter: root makes the Maildir and hands
        # it to nobody, who cannot reach it.
        closed = tmp_path / "closed"
        closed.mkdir(0o700)
        refused_for_nobody(closed / "box", closed / "box" / "tmp")
        return
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
