"""smtpwire.server: an asyncio SMTP server with the aiosmtpd public API."""
