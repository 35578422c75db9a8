"""AUTH for the client (RFC 4954): PLAIN, LOGIN, CRAM-MD5 and XOAUTH2, with
aiosmtplib's method names and its choice order for ``login()``.

The encodings are smtpwire.common's; this mixin only runs the exchanges.
"""

from __future__ import annotations

from typing import Final

from smtpwire.common.sasl import encode_login, encode_plain, encode_xoauth2

from .auth import auth_crammd5_verify
from .errors import SMTPAuthenticationError, SMTPException
from .response import SMTPResponse
from .typing import DefaultNumType, SMTPTokenGenerator, _default

__all__ = ["AuthMixin"]

_SUCCESS: Final = 235
_CONTINUE: Final = 334


class AuthMixin:
    """Authentication methods of :class:`~smtpwire.client.smtp.SMTP`."""

    AUTH_METHODS: tuple[str, ...] = ("cram-md5", "plain", "login")

    server_auth_methods: list[str]
    _login_username: str | bytes | None
    _login_password: str | bytes | None
    _oauth_token_generator: SMTPTokenGenerator | None

    # Provided by SMTP.
    async def _command(self, line: bytes, timeout: DefaultNumType) -> SMTPResponse:
        raise NotImplementedError

    async def _ehlo_or_helo_if_needed(self) -> None:
        raise NotImplementedError

    def supports_extension(self, extension: str, /) -> bool:
        raise NotImplementedError

    def get_transport_info(self, key: str) -> object:
        raise NotImplementedError

    def _over_tls(self) -> bool:
        return self.get_transport_info("sslcontext") is not None

    @property
    def supported_auth_methods(self) -> list[str]:
        return [method for method in self.AUTH_METHODS if method in self.server_auth_methods]

    async def _maybe_login_on_connect(self) -> None:
        if self._oauth_token_generator is not None:
            # Checked before a token is asked for, and with nothing sent: a server
            # without XOAUTH2 must not see another mechanism tried instead.
            if self._login_username is None:
                raise SMTPException("username is required when using oauth_token_generator")
            await self._ehlo_or_helo_if_needed()
            if "xoauth2" not in self.server_auth_methods:
                raise SMTPException(
                    "oauth_token_generator provided but server does not support XOAUTH2"
                )
            token = await self._oauth_token_generator()
            await self.auth_xoauth2(self._login_username, token)
        elif self._login_username is not None:
            password = self._login_password if self._login_password is not None else ""
            await self.login(self._login_username, password)

    async def login(
        self, username: str | bytes, password: str | bytes, /, timeout: DefaultNumType = _default
    ) -> SMTPResponse:
        """Authenticate with the first mechanism (CRAM-MD5, PLAIN, LOGIN) that both
        sides support and that succeeds; or XOAUTH2 when a token generator is set."""
        await self._ehlo_or_helo_if_needed()
        if not self.supports_extension("auth"):
            hint = "" if self._over_tls() else " Try connecting via TLS (or STARTTLS)."
            raise SMTPException(f"The SMTP AUTH extension is not supported by this server.{hint}")
        if self._oauth_token_generator is not None:
            token = await self._oauth_token_generator()
            return await self.auth_xoauth2(username, token, timeout=timeout)
        error: SMTPAuthenticationError | None = None
        for method in self.supported_auth_methods:
            attempt = {
                "cram-md5": self.auth_crammd5,
                "plain": self.auth_plain,
                "login": self.auth_login,
            }[method]
            try:
                return await attempt(username, password, timeout=timeout)
            except SMTPAuthenticationError as failure:
                error = failure
        if error is not None:
            raise error
        raise SMTPException("No suitable authentication method found.")

    async def _auth_line(self, line: str, timeout: DefaultNumType) -> SMTPResponse:
        if any(c in line for c in "\r\n\x00"):
            raise ValueError("authentication data must not hold CR, LF or NUL")
        return await self._command(line.encode("ascii") + b"\r\n", timeout)

    async def _finish(self, response: SMTPResponse) -> SMTPResponse:
        if response.code != _SUCCESS:
            raise SMTPAuthenticationError(response.code, response.message)
        return response

    async def auth_plain(
        self, username: str | bytes, password: str | bytes, /, *,
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        response = await self._auth_line(f"AUTH PLAIN {encode_plain(username, password)}", timeout)
        return await self._finish(response)

    async def auth_login(
        self, username: str | bytes, password: str | bytes, /, *,
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        response = await self._auth_line(f"AUTH LOGIN {encode_login(username)}", timeout)
        if response.code == _CONTINUE:
            response = await self._auth_line(encode_login(password), timeout)
        return await self._finish(response)

    async def auth_crammd5(
        self, username: str | bytes, password: str | bytes, /, *,
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        challenge = await self._auth_line("AUTH CRAM-MD5", timeout)
        if challenge.code != _CONTINUE:
            raise SMTPAuthenticationError(challenge.code, challenge.message)
        try:
            # The public helper, so that the login path reads a challenge exactly as
            # aiosmtplib does and refuses one with the same error.
            answer = auth_crammd5_verify(username, password, challenge.message)
        except SMTPAuthenticationError:
            # Unlike aiosmtplib, which leaves the server waiting for an answer (and
            # login()'s next mechanism would be taken for it): cancel (RFC 4954).
            await self._auth_line("*", timeout)
            raise
        return await self._finish(await self._auth_line(answer.decode("ascii"), timeout))

    async def auth_xoauth2(
        self, username: str | bytes, access_token: str | bytes, /, *,
        timeout: DefaultNumType = _default,
    ) -> SMTPResponse:  # fmt: skip
        await self._ehlo_or_helo_if_needed()
        user = username.decode() if isinstance(username, bytes) else username
        token = access_token.decode() if isinstance(access_token, bytes) else access_token
        response = await self._auth_line(f"AUTH XOAUTH2 {encode_xoauth2(user, token)}", timeout)
        if response.code == _CONTINUE:
            # The server's error details; an empty line ends the exchange.
            response = await self._auth_line("", timeout)
        return await self._finish(response)
