"""A Kafka broker with TLS and SASL/SCRAM listeners, and the certificates it needs.

:func:`make_pki` makes, with ``openssl``, a test CA, a broker certificate it
signs (for ``127.0.0.1`` and ``localhost``) in a PKCS#12 key store, a client
certificate for mutual TLS, and a second CA that signed nothing (a client
trusting only it sees an untrusted broker). :func:`start_secured_broker` runs a
:class:`~durafka.dev.broker.LocalBroker` with these listeners besides its
PLAINTEXT one:

========  ===============  =============================================
name      protocol         clients authenticate with
========  ===============  =============================================
SSL       SSL              nothing (server certificate only)
MTLS      SSL              a client certificate signed by the CA
SCRAM     SASL_PLAINTEXT   SCRAM-SHA-256 or -512, user ``alice``
SASLSSL   SASL_SSL         SCRAM-SHA-512 over TLS, user ``alice``
OAUTH     SASL_PLAINTEXT   OAUTHBEARER, unsecured JWTs (Kafka's test mode)
========  ===============  =============================================
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from durafka.dev.broker import Listener, LocalBroker

SCRAM_USER = "alice"
SCRAM_PASSWORD = "alice-secret"
_STORE_PASSWORD = "durafka-test"
_SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class Pki:
    """The files :func:`make_pki` wrote.

    Attributes:
        ca: the CA certificate that signed the broker's and the client's (PEM).
        other_ca: a CA certificate that signed nothing here (PEM).
        broker_store: the broker's key and certificate chain (PKCS#12).
        client_cert: the client's certificate (PEM), for mutual TLS.
        client_key: its private key (PEM, unencrypted).
    """

    ca: Path
    other_ca: Path
    broker_store: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class SecuredBroker:
    """A running broker with the listeners of this module, and its certificates."""

    broker: LocalBroker
    pki: Pki

    def bootstrap(self, listener: str) -> str:
        """``127.0.0.1:port`` of ``listener``: ``SSL``, ``MTLS``, ``SCRAM`` or ``SASLSSL``."""
        return self.broker.listener_bootstrap(listener)

    @property
    def plaintext(self) -> str:
        """The PLAINTEXT listener's address."""
        bootstrap = self.broker.bootstrap
        assert bootstrap is not None
        return bootstrap

    def ssl_config(self, ca: Path | None = None) -> dict[str, str]:
        """Client settings for the SSL listener, trusting ``ca`` (default: the right CA)."""
        return {"security.protocol": "ssl", "ssl.ca.location": str(ca or self.pki.ca)}

    def mtls_config(self) -> dict[str, str]:
        """Client settings for the MTLS listener: the CA and the client's certificate."""
        return {
            **self.ssl_config(),
            "ssl.certificate.location": str(self.pki.client_cert),
            "ssl.key.location": str(self.pki.client_key),
        }

    @staticmethod
    def scram_config(
        password: str = SCRAM_PASSWORD, mechanism: str = "SCRAM-SHA-256"
    ) -> dict[str, str]:
        """Client settings for the SCRAM listener."""
        return {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": mechanism,
            "sasl.username": SCRAM_USER,
            "sasl.password": password,
        }

    @staticmethod
    def oauth_config() -> dict[str, str]:
        """Client settings for the OAUTH listener: librdkafka's unsecured JWT for ``alice``."""
        return {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": "true",
            "sasl.oauthbearer.config": f"principal={SCRAM_USER}",
        }

    def sasl_ssl_config(self) -> dict[str, str]:
        """Client settings for the SASLSSL listener: SCRAM-SHA-512 over TLS."""
        return {
            **self.scram_config(mechanism="SCRAM-SHA-512"),
            "security.protocol": "sasl_ssl",
            "ssl.ca.location": str(self.pki.ca),
        }


def make_pki(directory: Path) -> Pki:
    """Write a CA, a broker key store, a client certificate and an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    for name in ("ca", "other-ca"):
        run(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=durafka test {name}",
        )  # fmt: skip
    (directory / "broker.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("broker", "/CN=localhost"), ("client", f"/CN={SCRAM_USER}")):
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", subject,
        )  # fmt: skip
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        )  # fmt: skip
    run(
        "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{_STORE_PASSWORD}",
    )  # fmt: skip
    return Pki(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        broker_store=directory / "broker.p12",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


def start_secured_broker(directory: Path) -> SecuredBroker:
    """Make the certificates and start a broker with the listeners of this module."""
    pki = make_pki(directory / "pki")
    properties: dict[str, str] = {}
    for name in ("ssl", "mtls", "saslssl"):
        properties |= {
            f"listener.name.{name}.ssl.keystore.location": str(pki.broker_store),
            f"listener.name.{name}.ssl.keystore.password": _STORE_PASSWORD,
            f"listener.name.{name}.ssl.keystore.type": "PKCS12",
            f"listener.name.{name}.ssl.key.password": _STORE_PASSWORD,
        }
    properties |= {
        "listener.name.mtls.ssl.client.auth": "required",
        "listener.name.mtls.ssl.truststore.location": str(pki.ca),
        "listener.name.mtls.ssl.truststore.type": "PEM",
    }
    for name in ("scram", "saslssl"):
        properties[f"listener.name.{name}.sasl.enabled.mechanisms"] = "SCRAM-SHA-256,SCRAM-SHA-512"
        for mechanism in ("scram-sha-256", "scram-sha-512"):
            properties[f"listener.name.{name}.{mechanism}.sasl.jaas.config"] = _SCRAM_JAAS
    properties |= {
        "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
        # No callback handler configured: Kafka validates unsecured JWTs.
        "listener.name.oauth.oauthbearer.sasl.jaas.config": (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
        ),
    }
    broker = LocalBroker(
        directory / "kafka",
        listeners=[
            Listener("SSL", "SSL"),
            Listener("MTLS", "SSL"),
            Listener("SCRAM", "SASL_PLAINTEXT"),
            Listener("SASLSSL", "SASL_SSL"),
            Listener("OAUTH", "SASL_PLAINTEXT"),
        ],
        properties=properties,
        scram_users={SCRAM_USER: SCRAM_PASSWORD},
    )
    broker.start()
    return SecuredBroker(broker, pki)
