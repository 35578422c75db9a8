"""The pytest plugin's settings: each one an ini option, overridden by an environment
variable (so CI can point a run elsewhere without editing files), read and checked
once when pytest starts.

They set up ``smtp_server`` -- the fixture to point an application at, whose SMTP
settings are read once at start-up -- and, for ``host`` and ``hostname``, every
server the plugin starts; ``web`` applies to the four ``smtp_server*`` fixtures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

import pytest

from ._server import DEFAULT_PASSWORD, DEFAULT_USERNAME, TLSMode

__all__ = ["OPTIONS", "Option", "PluginSettings", "add_options", "read_settings"]


@dataclass(frozen=True)
class Option:
    ini: str
    env: str
    help: str
    default: str = ""


OPTIONS: Final = {
    "host": Option(
        "smtpwire_host",
        "SMTPWIRE_TEST_HOST",
        "the address the plugin's servers listen on (default 127.0.0.1)",
        "127.0.0.1",
    ),
    "port": Option(
        "smtpwire_port",
        "SMTPWIRE_TEST_PORT",
        "the port smtp_server listens on (default 0: a free port)",
        "0",
    ),
    "hostname": Option(
        "smtpwire_hostname",
        "SMTPWIRE_TEST_HOSTNAME",
        "the name the plugin's servers give in their greeting and EHLO reply "
        "(default smtpwire.test)",
    ),
    "tls": Option(
        "smtpwire_tls",
        "SMTPWIRE_TEST_TLS",
        "smtp_server's TLS: none (the default), starttls or implicit",
        "none",
    ),
    "login": Option(
        "smtpwire_login",
        "SMTPWIRE_TEST_LOGIN",
        "an AUTH user name: smtp_server offers AUTH with this account",
    ),
    "password": Option(
        "smtpwire_password",
        "SMTPWIRE_TEST_PASSWORD",
        "the password of smtpwire_login (smtp_server offers AUTH with this account)",
    ),
    "auth_required": Option(
        "smtpwire_auth_required",
        "SMTPWIRE_TEST_AUTH_REQUIRED",
        "true: smtp_server refuses MAIL before AUTH; false: AUTH is optional "
        "(default: required with TLS, optional without)",
    ),
    "web": Option(
        "smtpwire_web",
        "SMTPWIRE_TEST_WEB",
        "true: the smtp_server* fixtures also serve their inbox and fault rules over "
        "HTTP, at server.web_url (needs aiohttp)",
    ),
}
_TLS_MODES = ("none", "starttls", "implicit")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def add_options(parser: pytest.Parser) -> None:
    for option in OPTIONS.values():
        parser.addini(option.ini, f"{option.help}; env {option.env}", default=option.default)


@dataclass(frozen=True)
class PluginSettings:
    """What the options say; ``origins`` tells where each value that was set came
    from (``SMTPWIRE_TEST_PORT=2526``, ``smtpwire_port = 2526``), for error messages."""

    host: str = "127.0.0.1"
    port: int = 0
    hostname: str | None = None
    tls: TLSMode = "none"
    login: str | None = None
    password: str | None = None
    auth_required: bool | None = None
    web: bool = False
    origins: tuple[tuple[str, str], ...] = ()

    def origin(self, name: str) -> str | None:
        return dict(self.origins).get(name)

    def for_every_server(self) -> dict[str, Any]:
        """The keyword arguments of SMTPTestServer every server of the plugin gets."""
        kwargs: dict[str, Any] = {"host": self.host}
        if self.hostname is not None:
            kwargs["hostname"] = self.hostname
        return kwargs

    def for_fixtures(self) -> dict[str, Any]:
        """The keyword arguments of SMTPTestServer every ``smtp_server*`` fixture
        gets (``smtp_server_factory``'s servers take ``web=`` themselves)."""
        return {"web": True} if self.web else {}

    def for_smtp_server(self) -> dict[str, Any]:
        """The keyword arguments of SMTPTestServer for the ``smtp_server`` fixture."""
        kwargs = {**self.for_fixtures(), **self.for_every_server()}
        kwargs.update(port=self.port, tls=self.tls)
        wants_auth = self.auth_required is not None
        if wants_auth or self.login is not None or self.password is not None:
            login = DEFAULT_USERNAME if self.login is None else self.login
            kwargs["auth"] = {login: DEFAULT_PASSWORD if self.password is None else self.password}
        if self.auth_required is not None:
            kwargs["auth_required"] = self.auth_required
        return kwargs

    def listen_origin(self) -> str | None:
        """Where smtp_server's address was set, when it was."""
        told = [self.origin("host"), self.origin("port")]
        return " and ".join(origin for origin in told if origin) or None


def read_settings(config: pytest.Config) -> PluginSettings:
    """The settings, checked: a wrong value is a ``pytest.UsageError`` of one line
    naming the option (or variable) and the value."""
    raw: dict[str, str] = {}
    origins: dict[str, str] = {}
    for name, option in OPTIONS.items():
        from_env = os.environ.get(option.env, "").strip()
        if from_env:
            raw[name], origins[name] = from_env, f"{option.env}={from_env}"
            continue
        from_ini = str(config.getini(option.ini)).strip()
        if from_ini and from_ini != option.default:
            raw[name], origins[name] = from_ini, f"{option.ini} = {from_ini}"

    def fail(name: str, expected: str) -> pytest.UsageError:
        return pytest.UsageError(f"{origins[name]}: expected {expected}")

    settings: dict[str, Any] = {}
    if "host" in raw:
        settings["host"] = raw["host"]
    if "hostname" in raw:
        settings["hostname"] = raw["hostname"]
    if "port" in raw:
        if not raw["port"].isdigit() or not 0 <= int(raw["port"]) <= 65535:
            raise fail("port", "a port number from 0 (a free port) to 65535")
        settings["port"] = int(raw["port"])
    if "tls" in raw:
        if raw["tls"].lower() not in _TLS_MODES:
            raise fail("tls", "one of " + ", ".join(_TLS_MODES))
        settings["tls"] = raw["tls"].lower()
    for name in ("login", "password"):
        if name in raw:
            settings[name] = raw[name]
    for name in ("auth_required", "web"):
        if name in raw:
            value = raw[name].lower()
            if value not in _TRUE + _FALSE:
                raise fail(name, "true or false")
            settings[name] = value in _TRUE
    if settings.get("auth_required") and settings.get("tls", "none") == "none":
        raise pytest.UsageError(
            f"{origins['auth_required']} needs smtpwire_tls starttls or implicit "
            "(AUTH required in plaintext is what smtp_server_factory is for)"
        )
    return PluginSettings(**settings, origins=tuple(origins.items()))
