"""smtpwire.server: an asyncio SMTP server with the aiosmtpd public API."""

__version__ = "0.1.0"
