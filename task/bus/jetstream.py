"""``jetstream://h:p[,h:p]``: NATS JetStream, at-least-once.

Layout (DESIGN.md): topic ``fetch-file`` lives in the stream ``TASK_FETCH_FILE`` (the topic
upper-cased, every other character ``_``) on the subject ``fetch-file``, limits retention
with a maximum age. Whichever side needs the stream first creates it. Workers of a channel
share one durable pull consumer named after the channel.

A message is acknowledged only after the Launcher's done task is published and confirmed,
so a worker that dies mid-task leaves its message to be delivered again after ``ack_wait``.
``nack(delay)`` is a NAK with that delay, ``in_progress()`` is +WPI (the Launcher sends it
for long tasks), ``attempt`` is JetStream's delivery count. A message nacked on its last
allowed delivery, or whose last delivery timed out (the server's max-deliveries advisory),
goes to the ``dead_letter`` topic when one is set, in DESIGN.md's envelope, and is
terminated; without one it is left in the stream and logged.

The producer awaits every publish acknowledgement (PubAck); concurrent sends are pipelined
on one connection, their PubAcks come back on one reply subscription (``jetstream_puback``),
and a publish without a PubAck within ``publish_timeout`` is retried. Each ``send`` call has
a fresh ``Nats-Msg-Id``, reused only for its own retries, so a retried publish is stored
once and a task sent again on purpose is never dropped as a duplicate; ``dedupe=false``
leaves the id out (less work per task for the server and the worker; a publish retried
after a lost PubAck may then be stored twice).

URL options (besides the connection options of ``nats://``): ``ack_wait`` (30s),
``max_deliver`` (5; -1 = no limit), ``max_ack_pending`` (consumer-wide; default 1000, at
least the prefetch), ``dead_letter`` (a topic; none), ``max_age`` (7d), ``replicas`` (1),
``storage`` (``file`` or ``memory``), ``publish_timeout`` (5s per try), ``publish_retries``
(5), ``dedupe`` (true).
"""

from __future__ import annotations

from task.bus.jetstream_consumer import JetStreamConsumer, JetStreamMessage
from task.bus.jetstream_options import JetStreamOptions, stream_name
from task.bus.jetstream_producer import JetStreamProducer
from task.credentials import Credentials

__all__ = [
    "JetStreamConsumer",
    "JetStreamMessage",
    "JetStreamOptions",
    "JetStreamProducer",
    "stream_name",
]


def open_consumer(
    url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials
) -> JetStreamConsumer:
    """``jetstream://h:p``: a consumer of the durable ``channel`` (no I/O until started)."""
    return JetStreamConsumer(JetStreamOptions.from_url(url, credentials), topic, channel, prefetch)


def open_producer(url: str, *, credentials: Credentials) -> JetStreamProducer:
    """``jetstream://h:p``: a confirming producer (no I/O until started)."""
    return JetStreamProducer(JetStreamOptions.from_url(url, credentials))
