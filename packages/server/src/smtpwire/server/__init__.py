"""smtpwire.server: an asyncio SMTP server with the aiosmtpd public API.

Its loggers are aiosmtpd's: ``mail.log`` (sessions) and ``mail.debug`` (the
ready-made handlers).  A library does not decide where logs go, so both get a
:class:`logging.NullHandler` here, whichever of the package's modules is
imported first; without one, Python's last-resort handler would print every
WARNING on the stderr of a program that never configured logging.  The command
line configures logging itself (:mod:`smtpwire.server._cli_logging`).
"""

import logging as _logging

__version__ = "0.1.0"

# The documented loggers (docs/server.md, "Logging"); _log_lines.LOGGER_NAMES.
_LOGGER_NAMES = ("mail.log", "mail.debug")

for _name in _LOGGER_NAMES:
    _logging.getLogger(_name).addHandler(_logging.NullHandler())
del _name
