"""The options of a ``kafka://`` URL and the topics they create.

Shared by the producer and the consumer, since whichever side needs a topic first creates
it. See ``task.bus.kafka`` for what the options mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import KafkaConnectionError, KafkaError  # type: ignore[import-untyped]
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

from task.credentials import Credentials
from task.errors import BusError, ConfigError
from task.url import parse_url

__all__ = ["KafkaOptions", "ensure_topic", "unreachable"]

_SASL = {"plain": "PLAIN", "scram-sha-256": "SCRAM-SHA-256", "scram-sha-512": "SCRAM-SHA-512"}
_OPTIONS = (
    "idempotence", "partitions", "replication", "drain_timeout", "commit_interval",
    "commit_every", "offset_reset", "sasl", "tls", "client_id", "session_timeout",
)


@dataclass(frozen=True)
class KafkaOptions:
    """Where the brokers are and how to talk to them, from a ``kafka://`` URL."""

    url: str
    bootstrap: list[str]
    idempotence: bool = True
    partitions: int = 4
    replication: int = 1
    drain_timeout: float = 10.0
    commit_interval: float = 1.0
    commit_every: int = 0  # 0: half the consumer's prefetch
    offset_reset: str = "earliest"
    sasl: str | None = None
    tls: bool = False
    client_id: str = "taskbus"
    session_timeout: float = 10.0
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_url(cls, url: str, credentials: Credentials | None = None) -> KafkaOptions:
        """Parse ``url``; secrets in ``credentials`` win over those in the URL.

        Raises:
            ConfigError: an unknown or malformed option, no host, SASL without a user.
        """
        creds = credentials or Credentials()
        parsed = parse_url(url, default_port=9092)
        parsed.check_options(_OPTIONS)
        if not parsed.hosts:
            raise ConfigError(f"kafka URL {parsed.redacted()} names no broker; use kafka://host:9092")
        sasl_name = parsed.text("sasl", "").lower() or None
        if sasl_name is not None and sasl_name not in _SASL:
            raise ConfigError(
                f"kafka option 'sasl' in {parsed.redacted()}: {sasl_name!r} is not supported; "
                f"use one of {', '.join(_SASL)}"
            )
        user = creds.user or parsed.username
        if sasl_name and not user:
            raise ConfigError(f"kafka sasl={sasl_name} needs a user: set the bus credentials")
        reset = parsed.text("offset_reset", "earliest")
        if reset not in ("earliest", "latest"):
            raise ConfigError(f"kafka option 'offset_reset': {reset!r}; use earliest or latest")
        has_tls_files = bool(creds.tls_ca or creds.tls_cert)
        return cls(
            url=parsed.redacted(),
            bootstrap=[f"{host}:{port}" for host, port in parsed.hosts],
            idempotence=parsed.boolean("idempotence", True),
            partitions=parsed.integer("partitions", 4, minimum=1),
            replication=parsed.integer("replication", 1, minimum=1),
            drain_timeout=parsed.duration("drain_timeout", 10.0),
            commit_interval=parsed.duration("commit_interval", 1.0),
            commit_every=parsed.integer("commit_every", 0, minimum=1),
            offset_reset=reset,
            sasl=_SASL[sasl_name] if sasl_name else None,
            tls=parsed.boolean("tls", has_tls_files),
            client_id=parsed.text("client_id", "taskbus"),
            session_timeout=parsed.duration("session_timeout", 10.0),
            user=user,
            password=creds.password or parsed.password,
            tls_ca=creds.tls_ca, tls_cert=creds.tls_cert, tls_key=creds.tls_key,
        )

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client gets (reads TLS files, so call at start)."""
        args: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "client_id": self.client_id}
        args["security_protocol"] = ("SASL_" if self.sasl else "") + ("SSL" if self.tls else "PLAINTEXT")
        if self.tls:
            args["ssl_context"] = create_ssl_context(
                cafile=self.tls_ca, certfile=self.tls_cert, keyfile=self.tls_key
            )
        if self.sasl:
            args.update(
                sasl_mechanism=self.sasl, sasl_plain_username=self.user,
                sasl_plain_password=self.password,
            )
        return args


def unreachable(options: KafkaOptions, err: Exception) -> BusError:
    """The error for brokers that cannot be reached, saying which."""
    return BusError(f"cannot reach the Kafka brokers of {options.url}: {err}; are they running?")


async def ensure_topic(options: KafkaOptions, topic: str) -> None:
    """Create ``topic`` with the URL's ``partitions`` and ``replication`` unless it exists.

    Raises:
        BusError: the brokers cannot be reached or refuse to create the topic.
    """
    admin = AIOKafkaAdminClient(**options.client_args())
    try:
        await admin.start()
        response = await admin.create_topics([NewTopic(topic, options.partitions, options.replication)])
    except KafkaConnectionError as err:
        raise unreachable(options, err) from err
    except KafkaError as err:
        raise BusError(f"Kafka at {options.url} could not create topic {topic!r}: {err}") from err
    finally:
        await admin.close()
    for _name, code, message in getattr(response, "topic_errors", ()):
        if code not in (0, 36):  # 36: the topic already exists, which is what we want
            raise BusError(
                f"Kafka at {options.url} refused to create topic {topic!r} "
                f"(error {code}: {message}); create it by hand or fix partitions/replication"
            )
