"""smtpwire.common as a package: public API, sans-I/O imports, limits, error hierarchy."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import smtpwire.common
from smtpwire.common import errors, limits

# --- public API ----------------------------------------------------------------------


@pytest.mark.parametrize("name", smtpwire.common.__all__)
def test_every_public_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from smtpwire.common import {name}", namespace)  # noqa: S102 - the import is the test
    assert namespace[name] is getattr(smtpwire.common, name)


def test_all_has_no_duplicates() -> None:
    assert len(smtpwire.common.__all__) == len(set(smtpwire.common.__all__))


@pytest.mark.parametrize(
    "name",
    [
        "SMTPReply",
        "ReplyParser",
        "format_reply",
        "parse_reply",
        "SMTPStatus",
        "EnhancedStatusCode",
        "Extensions",
        "parse_ehlo_reply",
        "format_ehlo_reply",
        "ProtocolError",
        "ReplyError",
        "MalformedReplyError",
        "ReplyTooLongError",
        "LineTooLongError",
        "CommandTooLongError",
        "UnsafeCharacterError",
        "SASLError",
        "SASLDecodeError",
        "SASLAbortedError",
        "limits",
    ],
)
def test_documented_names_are_exported(name: str) -> None:
    assert name in smtpwire.common.__all__


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from smtpwire.common import *", namespace)  # noqa: S102 - the import is the test
    exported = {name for name in namespace if name != "__builtins__"}
    assert exported == set(smtpwire.common.__all__)


def _submodules() -> list[str]:
    return sorted(
        info.name for info in pkgutil.iter_modules(smtpwire.common.__path__, "smtpwire.common.")
    )


def test_submodules_are_found() -> None:
    names = _submodules()
    for expected in ("replies", "status", "extensions", "sasl", "limits", "errors"):
        assert f"smtpwire.common.{expected}" in names


@pytest.mark.parametrize("module_name", _submodules())
def test_submodule_all_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in getattr(module, "__all__", ()):
        assert hasattr(module, name), f"{module_name}.{name}"


def test_smtpwire_is_a_namespace_package() -> None:
    import smtpwire

    assert getattr(smtpwire, "__file__", None) is None


def test_py_typed_is_shipped() -> None:
    from pathlib import Path

    assert (Path(smtpwire.common.__file__).parent / "py.typed").is_file()


# --- sans-I/O --------------------------------------------------------------------------

_IO_MODULES = ("asyncio", "socket", "ssl", "threading", "selectors")

_IMPORT_PROBE = """
import importlib, json, pkgutil, sys
before = sorted(m for m in {io!r} if m in sys.modules)
import smtpwire.common
loaded = []
for info in pkgutil.iter_modules(smtpwire.common.__path__, "smtpwire.common."):
    importlib.import_module(info.name)
    loaded.append(info.name)
after = sorted(m for m in {io!r} if m in sys.modules)
print(json.dumps({{"before": before, "after": after, "loaded": loaded}}))
"""


def _probe() -> dict[str, list[str]]:
    completed = subprocess.run(  # noqa: S603 - runs this interpreter on a fixed script
        [sys.executable, "-c", _IMPORT_PROBE.format(io=_IO_MODULES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, list[str]] = json.loads(completed.stdout)
    return result


def test_importing_the_package_loads_no_io_modules() -> None:
    result = _probe()
    assert result["before"] == [], "the interpreter itself preloaded I/O modules"
    assert len(result["loaded"]) >= 6
    assert result["after"] == []


# --- limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # RFC 5321 section 4.5.3.1
        ("LOCAL_PART_MAX", 64),
        ("DOMAIN_MAX", 255),
        ("PATH_MAX", 256),
        ("COMMAND_LINE_MAX", 512),
        ("REPLY_LINE_MAX", 512),
        ("TEXT_LINE_MAX", 1000),
        ("RECIPIENTS_MIN", 100),
        ("MESSAGE_CONTENT_MIN", 65536),
        # RFC 5321 section 4.5.3.2 (seconds)
        ("INITIAL_220_TIMEOUT", 300),
        ("MAIL_TIMEOUT", 300),
        ("RCPT_TIMEOUT", 300),
        ("DATA_INITIATION_TIMEOUT", 120),
        ("DATA_BLOCK_TIMEOUT", 180),
        ("DATA_TERMINATION_TIMEOUT", 600),
        ("SERVER_IDLE_TIMEOUT", 300),
        # Extensions
        ("SIZE_EXTENSION_ALLOWANCE", 26),  # RFC 1870 section 6
        ("SMTPUTF8_EXTENSION_ALLOWANCE", 10),  # RFC 6531 section 3.4
        ("AUTH_LINE_MAX", 12288),  # RFC 4954 section 4
        ("ENVID_MAX", 100),  # RFC 3461 section 4.4
        ("ORCPT_MAX", 500),  # RFC 3461 section 4.2
        # Hardening caps
        ("REPLY_LINE_CAP", 8192),
        ("REPLY_CAP", 32768),
        ("DATA_SIZE_DEFAULT", 33_554_432),
    ],
)
def test_limit_values(name: str, value: int) -> None:
    constant = getattr(limits, name)
    assert type(constant) is int
    assert constant == value


def test_limits_is_reachable_from_the_package() -> None:
    assert smtpwire.common.limits is limits


def test_caps_are_above_the_rfc_minimums() -> None:
    assert limits.REPLY_LINE_CAP >= limits.REPLY_LINE_MAX
    assert limits.REPLY_CAP >= limits.REPLY_LINE_CAP


# --- error hierarchy ---------------------------------------------------------------------


def _error_classes() -> list[type[BaseException]]:
    return [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("error", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_subclasses_protocol_error(error: type[BaseException]) -> None:
    assert issubclass(error, errors.ProtocolError)
    assert issubclass(error, Exception)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (errors.ReplyTooLongError, errors.LineTooLongError),
        (errors.ReplyTooLongError, errors.ReplyError),
        (errors.MalformedReplyError, errors.ReplyError),
        (errors.CommandTooLongError, errors.LineTooLongError),
        (errors.CommandTooLongError, errors.CommandSyntaxError),
        (errors.NonASCIIError, errors.CommandSyntaxError),
        (errors.AddressSyntaxError, errors.CommandSyntaxError),
        (errors.ParameterSyntaxError, errors.CommandSyntaxError),
        (errors.UnsafeCharacterError, ValueError),
        (errors.SASLDecodeError, errors.SASLError),
        (errors.SASLAbortedError, errors.SASLError),
    ],
    ids=lambda cls: cls.__name__,
)
def test_error_relations(child: type[BaseException], parent: type[BaseException]) -> None:
    assert issubclass(child, parent)


def test_package_errors_are_the_errors_module_classes() -> None:
    for name in errors.__all__:
        assert getattr(smtpwire.common, name) is getattr(errors, name)


def test_line_too_long_carries_limit() -> None:
    error = errors.LineTooLongError("too long", limit=512)
    assert error.limit == 512
    assert str(error) == "too long"


def test_reply_too_long_carries_limit_and_scope() -> None:
    error = errors.ReplyTooLongError("reply too long", limit=8192, scope="line")
    assert error.limit == 8192
    assert error.scope == "line"
    with pytest.raises(errors.LineTooLongError):
        raise error


def test_command_too_long_carries_limit() -> None:
    error = errors.CommandTooLongError("command too long", limit=512)
    assert error.limit == 512
    with pytest.raises(errors.LineTooLongError):
        raise error


def test_unsafe_character_error_caught_as_value_error() -> None:
    with pytest.raises(ValueError, match="smuggle"):
        raise errors.UnsafeCharacterError("smuggle")
