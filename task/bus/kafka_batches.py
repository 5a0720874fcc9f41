"""Done tasks gathered into Kafka record batches, sent a round at a time.

aiokafka's ``send()`` costs a coroutine, a partition look-up, a size estimate and a future
per record, and its delivery report resolves one future per record: together more than the
rest of a no-op task's handling. A Kafka consumer's messages do not need a report each:
their commit waits for the delivery of the done tasks sent for them
(``task.bus.kafka_delivery``). So those sends are appended to an open record batch of their
partition (aiokafka's public ``create_batch()``), and the batches go out with
``send_batch()``: one future per batch, delivered or failed as a whole.

The batches go out in rounds: every batch filled so far, then nothing more until that
round is delivered, while the next round fills. That is the raw client's loop (send a
fetched batch's done records, wait for their delivery) and what aiokafka's own sender does
per broker; it keeps one produce request per broker per round rather than one per partition
whenever a partition's answer comes back. Records keep their order within a partition.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["RecordBatches"]

#: aiokafka's record builder takes a list, which it only reads
_NO_HEADERS: list[tuple[str, bytes]] = []


class _Batch:
    """One record batch: its builder and the future its records' messages wait on."""

    __slots__ = ("builder", "delivered", "partition", "topic")

    def __init__(self, builder: Any, delivered: asyncio.Future[None], topic: str, partition: int) -> None:
        self.builder = builder
        self.delivered = delivered
        self.topic = topic
        self.partition = partition


class RecordBatches:
    """Open record batches of an aiokafka producer ``client``, sent a round at a time."""

    def __init__(self, client: Any) -> None:
        self._client = client
        #: the open batch of each (topic, partition) in this round
        self._open: dict[tuple[str, int], _Batch] = {}
        #: every batch of this round, in the order they were opened (a full one before its
        #: partition's next)
        self._round: list[_Batch] = []
        self._sender: asyncio.Task[None] | None = None

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes) -> asyncio.Future[None] | None:
        """Add a record; the future is done once its batch is delivered (or failed).

        None when the record does not fit in an empty batch: send it on its own.
        """
        batch = self._open.get((topic, partition))
        if batch is not None and batch.builder.append(timestamp=None, key=key, value=value, headers=_NO_HEADERS) is not None:
            return batch.delivered
        batch = _Batch(self._client.create_batch(), asyncio.get_running_loop().create_future(), topic, partition)
        if batch.builder.append(timestamp=None, key=key, value=value, headers=_NO_HEADERS) is None:
            return None
        self._open[(topic, partition)] = batch
        self._round.append(batch)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return batch.delivered

    async def _send(self) -> None:
        """Send rounds until none is filling, each once the one before is delivered."""
        try:
            while self._round:
                batches, self._round, self._open = self._round, [], {}  # the next round fills
                await self._send_round(batches)
        finally:
            self._sender = None

    async def _send_round(self, batches: list[_Batch]) -> None:
        sent: list[tuple[_Batch, asyncio.Future[Any]]] = []
        try:
            for batch in batches:
                try:
                    delivery = await self._client.send_batch(batch.builder, batch.topic, partition=batch.partition)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 - any failure gives the batch's messages back
                    batch.delivered.set_exception(err)
                    continue
                sent.append((batch, delivery))
            if sent:
                await asyncio.wait([delivery for _, delivery in sent])
        except asyncio.CancelledError:  # the loop is closing: nothing more will be confirmed
            for batch in (*batches, *self._round):
                if not batch.delivered.done():
                    batch.delivered.cancel()
            raise
        for batch, delivery in sent:
            if delivery.cancelled():
                batch.delivered.cancel()
                continue
            failure = delivery.exception()
            if failure is None:
                batch.delivered.set_result(None)
            else:
                batch.delivered.set_exception(failure)

    async def flush(self) -> None:
        """Wait until every batch appended so far is delivered or failed."""
        if self._sender is not None:
            await asyncio.wait((self._sender,))
