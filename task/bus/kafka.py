"""The Kafka bus (``kafka://h:p[,h:p]``) on aiokafka: consumer groups and safe commits.

The consumer joins the group ``channel`` on ``topic``. Several messages of one partition may
run at once (``prefetch`` > 1), so the offset committed for a partition is its lowest
unfinished message (see ``task.bus.kafka_offsets``): a crash redelivers every unfinished
task and never skips one. Commits are batched by count and time.

Kafka has no per-message redelivery, so ``nack(delay)`` re-publishes the body to the same
topic (same key, so the same partition) after ``delay`` with an attempt header, then counts
the original as done: nothing is lost and the offset moves on. ``attempt`` is that header
plus one. ``in_progress()`` is a no-op: there is no lease, and the consumer keeps polling
while tasks run, so long tasks never make it leave the group.

``stop()`` stops taking records but keeps the consumer in its group until every message it
handed out is settled, so tasks that end after the stop began (the Launcher's "worker forced
to close" ones too) are committed; prefetched messages never handed out stay uncommitted for
the group's next member. The last settlement or a second ``stop()`` commits and leaves.

URL options (all optional):

- ``idempotence`` (true): idempotent producer; brokers that refuse it (Tansu) need ``false``.
- ``partitions`` (4), ``replication`` (1): for topics this bus creates when missing.
- ``drain_timeout`` (10s): how long a revoked partition's running tasks may take to finish
  before the partition is released uncommitted past them (a stopping worker's tasks get the
  Launcher's ``worker_kill_time`` instead), and how long a closing consumer waits for its
  nack re-publishes.
- ``commit_interval`` (1s), ``commit_every`` (half the prefetch, that is of
  ``max_in_progress``): a commit is due that long after a message finished, or after that
  many finished, whichever comes first. Finished messages not yet committed run again after
  a crash, so the count bounds the duplicates a crash makes.
- ``offset_reset`` (earliest): where a new group starts reading.
- ``sasl`` (``plain``, ``scram-sha-256``, ``scram-sha-512``) with the user and password from
  the settings' credentials (or the URL); ``tls`` (false; on when credentials name TLS files).
- ``session_timeout`` (10s): how soon the group notices a dead member.
- ``client_id`` (taskbus).
"""

from __future__ import annotations

# The registry imports this module to tell a missing extra apart: import the client first,
# so a missing aiokafka is reported even when the modules below are already imported.
import aiokafka  # type: ignore[import-untyped]  # noqa: F401

from task.bus.kafka_consumer import ATTEMPT_HEADER, KafkaConsumer, KafkaMessage
from task.bus.kafka_options import KafkaOptions, ensure_topic
from task.bus.kafka_producer import KafkaProducer
from task.credentials import Credentials

__all__ = [
    "ATTEMPT_HEADER", "KafkaConsumer", "KafkaMessage", "KafkaOptions", "KafkaProducer", "ensure_topic",
]


def open_producer(url: str, *, credentials: Credentials) -> KafkaProducer:
    """``kafka://h:p[,h:p]?options``: a producer (no I/O until started).

    Raises:
        ConfigError: a malformed URL or option.
    """
    return KafkaProducer(KafkaOptions.from_url(url, credentials))


def open_consumer(
    url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials
) -> KafkaConsumer:
    """``kafka://h:p[,h:p]?options``: a member of group ``channel`` on ``topic``.

    Raises:
        ConfigError: a malformed URL or option.
    """
    return KafkaConsumer(KafkaOptions.from_url(url, credentials), topic, channel, prefetch)

