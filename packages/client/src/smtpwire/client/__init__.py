"""smtpwire.client: an asyncio SMTP client with the aiosmtplib public API."""
