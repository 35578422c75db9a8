"""A SessionHost for driving smtpwire.common.server_session.ServerSession in
memory: aiosmtpd's Session and Envelope as far as the machine reads and writes
them, and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpwire.common.server_rules import RcptDSN

HOSTNAME = "mx.example"


@dataclass
class Facts:
    """aiosmtpd's Session, as far as ServerSession reads it."""

    host_name: str | None = None
    extended_smtp: bool = False
    authenticated: bool | None = None


@dataclass
class Envelope:
    """aiosmtpd's Envelope, as far as ServerSession reads and writes it."""

    mail_from: str | None = None
    mail_options: list[str] = field(default_factory=list)
    smtp_utf8: bool = False
    rcpt_tos: list[str] = field(default_factory=list)
    rcpt_options: list[str] = field(default_factory=list)
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    rcpt_dsn: dict[str, RcptDSN] = field(default_factory=dict)
    body_type: str | None = None


@dataclass
class Host:
    """The SessionHost: the objects the application sees and the server's settings."""

    hostname: str = HOSTNAME
    data_size_limit: int | None = 33554432
    enable_SMTPUTF8: bool = False
    command_size_limit: int = 512
    line_length_limit: int = 1001
    local_part_limit: int = 0
    session: Facts = field(default_factory=Facts)
    envelope: Envelope = field(default_factory=Envelope)
