"""HELP's text for a command: the :func:`syntax` decorator of ``smtp_VERB`` methods.

A module of its own so that every module that defines commands (``smtp``,
``_auth``, ``lmtp``) can use it without importing the session engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["syntax"]

_Method = TypeVar("_Method", bound=Callable[..., Any])


def syntax(
    text: str, extended: str | None = None, when: str | None = None
) -> Callable[[_Method], _Method]:
    """Document an ``smtp_VERB`` method for HELP; ``extended`` is added after EHLO
    and ``when`` names an SMTP attribute that must be true for the verb to be listed."""

    def decorator(function: _Method) -> _Method:
        function.__smtp_syntax__ = text  # type: ignore[attr-defined]
        function.__smtp_syntax_extended__ = extended  # type: ignore[attr-defined]
        function.__smtp_syntax_when__ = when  # type: ignore[attr-defined]
        return function

    return decorator
