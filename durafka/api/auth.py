"""Who may call the HTTP API: bearer tokens with two roles.

* ``DURAFKA_API_TOKEN``: the operator's token, every call;
* ``DURAFKA_API_READ_TOKEN``: a read-only token, only calls that change nothing
  (listing, status, history, entities, dead letters, partitions, the stream).

A server without a token is refused (:func:`check_exposure`) unless it listens
on 127.0.0.1 only and was started with ``--insecure-local``; then every caller
on this machine is an operator. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass
from typing import Literal

from durafka.errors import ConfigurationError

__all__ = ["ADMIN_TOKEN_ENV", "READ_TOKEN_ENV", "ApiTokens", "Role", "check_exposure"]

ADMIN_TOKEN_ENV = "DURAFKA_API_TOKEN"
READ_TOKEN_ENV = "DURAFKA_API_READ_TOKEN"

Role = Literal["read", "admin"]

#: Tokens shorter than this are refused: a guessable token is no protection.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class ApiTokens:
    """The tokens a server accepts.

    Attributes:
        admin: the operator token (None: none set).
        read: the read-only token (None: none set).
        insecure_local: no token is needed (a 127.0.0.1-only server, ``--insecure-local``).
    """

    admin: str | None = None
    read: str | None = None
    insecure_local: bool = False

    @classmethod
    def from_env(cls, *, insecure_local: bool = False) -> ApiTokens:
        """The tokens of ``DURAFKA_API_TOKEN`` and ``DURAFKA_API_READ_TOKEN``.

        Raises:
            ConfigurationError: a token is shorter than 16 characters, or the two are equal.
        """
        admin = os.environ.get(ADMIN_TOKEN_ENV) or None
        read = os.environ.get(READ_TOKEN_ENV) or None
        for name, token in ((ADMIN_TOKEN_ENV, admin), (READ_TOKEN_ENV, read)):
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                raise ConfigurationError(
                    f"{name} is shorter than {MIN_TOKEN_LENGTH} characters; use a random "
                    "one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`"
                )
        if admin is not None and admin == read:
            raise ConfigurationError(f"{ADMIN_TOKEN_ENV} and {READ_TOKEN_ENV} must differ")
        return cls(admin, read, insecure_local)

    @property
    def required(self) -> bool:
        """Whether calls need a token."""
        return not (self.insecure_local and self.admin is None and self.read is None)

    def role_of(self, token: str | None) -> Role | None:
        """The role a bearer token grants (None: none)."""
        if not self.required:
            return "admin"
        if token is None:
            return None
        if self.admin is not None and hmac.compare_digest(token.encode(), self.admin.encode()):
            return "admin"
        if self.read is not None and hmac.compare_digest(token.encode(), self.read.encode()):
            return "read"
        return None


def check_exposure(tokens: ApiTokens, host: str) -> None:
    """Refuse to serve without a token, unless on 127.0.0.1 only with ``--insecure-local``.

    Raises:
        ConfigurationError: no token is set and the server is not a local-only
            ``--insecure-local`` one; the message says how to set one.
    """
    if tokens.admin is not None:
        return
    if tokens.insecure_local:
        if _is_loopback(host):
            return
        raise ConfigurationError(
            f"--insecure-local serves without a token, so only on 127.0.0.1, not on {host!r}; "
            f"set {ADMIN_TOKEN_ENV} to serve on another address"
        )
    raise ConfigurationError(
        f"no API token: set {ADMIN_TOKEN_ENV} (and {READ_TOKEN_ENV} for read-only users), e.g. "
        f"`export {ADMIN_TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe())')`"
        ", or, on your own machine, pass --insecure-local to serve on 127.0.0.1 without one"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
