"""The file bus under the Launcher's concurrency and around rotations: nothing stuck,
nothing skipped, stdin that does not hold a stop hostage."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from task.bus.base import Consumer
from task.bus.file import FileConsumer, FileOptions
from task.bus.memory import MemoryBroker, MemoryConsumer

TASKBUS = str(Path(sys.executable).parent / "taskbus")


def line(info: str) -> bytes:
    return b'{"type":"t","info":"%s"}' % info.encode()


def finite_consumer(kind: str, tmp_path: Path, bodies: list[bytes]) -> Consumer:
    if kind == "file":
        (tmp_path / "t.jsonl").write_bytes(b"".join(b + b"\n" for b in bodies))
        return FileConsumer(FileOptions(f"{tmp_path}/", offset=False), "t", prefetch=2)
    broker = MemoryBroker()
    for body in bodies:
        broker.publish("t", body)
    broker.close_topic("t")
    return MemoryConsumer(broker, "t", prefetch=2)


@pytest.mark.parametrize("kind", ["file", "memory"])
async def test_nacks_at_the_end_of_a_finite_bus_reach_every_runner(kind: str, tmp_path: Path) -> None:
    # Given two runners that each took the last lines of a finite bus
    consumer = finite_consumer(kind, tmp_path, [line("a"), line("b")])
    first, second = await consumer.msg(), await consumer.msg()
    assert first is not None and second is not None
    # When both give their line back and wait for more
    await first.nack(0.05)
    await second.nack(0.05)
    again = await asyncio.wait_for(asyncio.gather(consumer.msg(), consumer.msg()), 10)
    # Then each gets one back, and once they are acknowledged the bus is finished for both
    assert sorted(m.body for m in again if m is not None) == [line("a"), line("b")]
    assert {m.attempt for m in again if m is not None} == {2}
    finishing = asyncio.gather(consumer.msg(), consumer.msg())
    for message in again:
        assert message is not None
        await message.ack()
    assert await asyncio.wait_for(finishing, 10) == [None, None]
    await consumer.stop()


def replace(path: Path, *infos: str) -> None:
    """Rotate: a new file (new inode) takes the old one's name."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(b"".join(line(i) + b"\n" for i in infos))
    os.replace(fresh, path)


async def test_a_line_of_the_old_file_acked_after_a_rotation_does_not_skip_new_lines(tmp_path: Path) -> None:
    # Given a followed file whose one long line is in flight when the file is rotated
    path = tmp_path / "t.jsonl"
    path.write_bytes(line("old-" + "x" * 200) + b"\n")
    follower = FileConsumer(FileOptions(f"{tmp_path}/", follow=True, poll=0.01), "t", "w")
    old = await asyncio.wait_for(follower.msg(), 5)
    assert old is not None
    replace(path, *(f"new-{i}" for i in range(1, 21)))  # longer than the old line's offset
    first_new = await asyncio.wait_for(follower.msg(), 5)
    assert first_new is not None and first_new.body == line("new-1")
    # When the old line is acknowledged, and the reader dies before acking the new one
    await old.ack()
    await follower.stop()
    # Then a restarted reader starts at the new file's first line, not at the old line's offset
    restarted = FileConsumer(FileOptions(f"{tmp_path}/"), "t", "w")
    message = await asyncio.wait_for(restarted.msg(), 5)
    assert message is not None and message.body == line("new-1")
    await restarted.stop()


async def test_a_file_rotated_while_no_reader_ran_is_read_from_its_start(tmp_path: Path) -> None:
    # Given a reader that acknowledged the whole first file
    path = tmp_path / "t.jsonl"
    path.write_bytes(line("a") + b"\n")
    reader = FileConsumer(FileOptions(f"{tmp_path}/"), "t", "w")
    message = await reader.msg()
    assert message is not None
    await message.ack()
    assert await reader.msg() is None
    await reader.stop()
    # When the file is replaced by a longer one while no reader runs
    replace(path, "b", "c", "d")
    # Then the next reader reads the new file from its start
    again = FileConsumer(FileOptions(f"{tmp_path}/"), "t", "w")
    bodies = []
    while (message := await asyncio.wait_for(again.msg(), 5)) is not None:
        bodies.append(message.body)
        await message.ack()
    assert bodies == [line("b"), line("c"), line("d")]


@pytest.mark.timeout(60)
def test_sigterm_stops_a_worker_waiting_on_stdin(tmp_path: Path) -> None:
    # Given a worker reading tasks from stdin, which stays open with nothing on it
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    with subprocess.Popen(
        [TASKBUS, "worker", "nop", "--type", "t", "--bus", "file:-", "--out-bus", f"file:{tmp_path}/"],
        cwd=tmp_path, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as worker:
        assert worker.stdin is not None and worker.stderr is not None
        try:
            worker.stdin.write(line("one").decode() + "\n")
            worker.stdin.flush()
            while "worker starting" not in worker.stderr.readline():
                pass
            # When it is told to stop
            worker.send_signal(signal.SIGTERM)
            # Then it exits cleanly, without waiting for stdin to close
            assert worker.wait(timeout=30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
            worker.stdin.close()
            worker.stderr.read()
