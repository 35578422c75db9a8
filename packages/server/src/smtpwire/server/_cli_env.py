"""What the command line takes from its environment rather than its arguments:
``SMTPWIRE_*`` variables for every option, and the current directory on
``sys.path`` for ``-c``.

Containers and service managers pass settings as environment variables (a
Compose file's ``environment:``, systemd's ``Environment=``), so each option
has one, named after its long form: ``--listen`` is ``SMTPWIRE_LISTEN``,
``--max-connections`` is ``SMTPWIRE_MAX_CONNECTIONS``, the handler's arguments
are ``SMTPWIRE_CLASSARGS`` (split as a shell would).  A variable only changes
the option's default, so a flag on the command line wins.  The variables are
derived from the parser itself, so an option added later has one too.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["DOCS", "PREFIX", "apply_environment", "current_directory_on_path", "variable_name"]

PREFIX = "SMTPWIRE_"
DOCS = "https://github.com/smtpwire/smtpwire/blob/main/docs/"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

# Not options a user sets: the help, the version, and --workers' internal one.
_NO_VARIABLE = (argparse._HelpAction, argparse._VersionAction)


def variable_name(action: argparse.Action) -> str | None:
    """The environment variable of an option, None for one that has none."""
    if isinstance(action, _NO_VARIABLE) or action.help == argparse.SUPPRESS:
        return None
    if not action.option_strings:
        return PREFIX + action.dest.upper()  # a positional: CLASSARGS
    longest = max(action.option_strings, key=len).lstrip("-")
    return PREFIX + longest.upper().replace("-", "_")


def apply_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Make the variables set in ``environ`` the options' defaults, and list
    them all in the help's epilog.  A bad value is a one-line usage error that
    names the variable (exit status 2, as for a bad flag)."""
    environ = os.environ if environ is None else environ
    listed = []
    for action in parser._actions:
        name = variable_name(action)
        if name is None:
            continue
        listed.append(
            (name, ", ".join(action.option_strings) or str(action.metavar or action.dest))
        )
        text = environ.get(name)
        if text is None:
            continue
        if action.dest == "classpath":
            # As if -c were given (its action notes that): --web keeps this handler.
            parser.set_defaults(classpath_given=True)
        try:
            _set_default(action, text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
            parser.exit(2, f"{parser.prog}: error: environment variable {name}={text!r}: {error}\n")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _epilog(listed)


def _set_default(action: argparse.Action, text: str) -> None:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if _flag(text):
            action.default = action.const
        return
    if isinstance(action, argparse._CountAction):
        count = int(text) if text.strip().isdigit() else (1 if _flag(text) else 0)
        action.default = count
        return
    if action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction):
        action.default = [_converted(action, word) for word in shlex.split(text)]
        return
    value = _converted(action, text)
    # A string default is converted again by argparse: give it the text then, so
    # that a type that rewrites its input is applied once.
    action.default = text if isinstance(value, str) else value


def _flag(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _converted(action: argparse.Action, text: str) -> Any:
    convert = action.type
    if convert is None:
        value: Any = text
    elif callable(convert):
        try:
            value = convert(text)
        except (TypeError, ValueError):
            name = getattr(convert, "__name__", "value")
            raise ValueError(f"invalid {name} value") from None
    else:  # pragma: no cover - argparse's registry names ("int" as a string) are unused here
        raise TypeError(f"cannot convert with {convert!r}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"invalid choice (choose from {choices})")
    return value


def _epilog(listed: list[tuple[str, str]]) -> str:
    width = max((len(name) for name, _ in listed), default=0)
    lines = [
        "environment variables (a flag on the command line wins over its variable;",
        "yes/no options take 1/0, true/false, yes/no or on/off):",
    ]
    lines += [f"  {name.ljust(width)}  {option}" for name, option in listed]
    lines += ["", f"documentation: {DOCS}server.md", f"deployment:    {DOCS}deploy.md"]
    return "\n".join(lines)


def current_directory_on_path() -> None:
    """Let ``-c module.Class`` find a module in the current directory however
    the server was started: ``python -m`` puts the directory first on
    ``sys.path``, a console script (``smtpwire-server``) puts its own ``bin``
    there instead.  First, as with ``python -m``."""
    here = os.getcwd()
    if "" in sys.path or here in sys.path:
        return
    sys.path.insert(0, here)
