"""The ``from_end`` consumers ``task.Client`` follows the done topic with: each reads its own
copy of what is sent after it started, and takes nothing from the topic's other readers."""

from __future__ import annotations

from pathlib import Path

from task.bus.file import FileConsumer, FileOptions, FileProducer
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer


async def test_memory_from_end_gets_a_copy_of_later_messages_only() -> None:
    broker = MemoryBroker()
    broker.publish("done", b"before")
    worker_side = MemoryConsumer(broker, "done")
    follower = MemoryConsumer(broker, "done", "c1", from_end=True)
    await follower.start()
    await MemoryProducer(broker).send("done", b"after")

    got = await follower.msg()
    assert got is not None and got.body == b"after"
    await got.ack()
    # the topic's own reader still gets both: the follower took nothing from it
    first, second = await worker_side.msg(), await worker_side.msg()
    assert first is not None and second is not None
    assert (first.body, second.body) == (b"before", b"after")

    await follower.stop()
    await follower.stop()  # idempotent
    broker.publish("done", b"later")
    assert broker.pending("done") == 3  # nothing is copied to a stopped follower
    assert [t for t in broker if t != "done"] == []


async def test_file_from_end_reads_only_lines_appended_after_start(tmp_path: Path) -> None:
    options = FileOptions.from_url(f"file:{tmp_path}/?follow=1&offset=0&poll=10ms")
    producer = FileProducer(options)
    await producer.send("done", b'{"type":"old"}')
    follower = FileConsumer(options, "done", "c1", from_end=True)
    await follower.start()
    await producer.send("done", b'{"type":"new"}')

    got = await follower.msg()
    assert got is not None and got.body == b'{"type":"new"}'
    await follower.stop()
    await producer.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.jsonl"]  # no offset file left


async def test_file_from_end_reads_a_file_created_after_start_from_its_beginning(tmp_path: Path) -> None:
    options = FileOptions.from_url(f"file:{tmp_path}/?follow=1&offset=0&poll=10ms")
    follower = FileConsumer(options, "done", "c1", from_end=True)
    await follower.start()
    producer = FileProducer(options)
    await producer.send("done", b'{"type":"first"}')

    got = await follower.msg()
    assert got is not None and got.body == b'{"type":"first"}'
    await follower.stop()
    await producer.stop()
