"""Type names aiosmtplib users import from ``aiosmtplib.typing``."""

from __future__ import annotations

import enum
import os
from collections.abc import Awaitable, Callable
from typing import Final, Literal

from smtpwire.common.status import SMTPStatus

__all__ = ["Default", "SMTPStatus", "SMTPTokenGenerator", "SocketPathType"]

SMTPTokenGenerator = Callable[[], Awaitable[str]]
SocketPathType = str | bytes | os.PathLike[str]


class Default(enum.Enum):
    """Marks an argument left out, as opposed to one given as None ("no timeout")."""

    token = 0


_default: Final = Default.token
DefaultNumType = float | None | Literal[Default.token]
