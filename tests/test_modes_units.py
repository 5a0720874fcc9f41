"""PriorityConsumer's guarantees (nothing lost on stop or cancellation), broadcast tasks in
the ledger, and the command line of both. The per-bus behaviour is in tests/test_modes*.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from task import Task, Worker, completed
from task.bus.broadcast import BroadcastConsumer, open_broadcast_consumer
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.bus.priority import PriorityConsumer, split_topics
from task.errors import BusError, ConfigError
from task.launcher import Launcher, LauncherOptions
from task.ledger.memory import MemoryLedger
from task.ledger.recorder import LedgerRecorder
from task.ledger.sqlite import SqliteLedger
from task.result import Outcome
from task.settings import WorkerSettings
from task.worker import TaskContext
from tests.modes_contract import recording_worker
from tests.test_cli import lines, taskbus


def _lanes(broker: MemoryBroker, *topics: str) -> list[MemoryConsumer]:
    return [MemoryConsumer(broker, topic, "w") for topic in topics]


async def test_stop_gives_back_a_message_taken_but_not_handed_out() -> None:
    # Given a priority reader that has taken low-1 from its topic to keep it ready
    broker = MemoryBroker()
    for i in range(2):
        broker.publish("low", f"low-{i}".encode())
    reader = PriorityConsumer(_lanes(broker, "high", "low"), grace=0)
    first = await reader.msg()
    assert first is not None and first.body == b"low-0"
    await asyncio.sleep(0)  # the kept fetch takes low-1
    assert not broker.topic("low").ready
    # When it stops
    await reader.stop()
    # Then low-1 is back on its topic for another worker, and nothing else moved
    again = MemoryConsumer(broker, "low", "w")
    taken = await again.msg()
    assert taken is not None and (taken.body, taken.attempt) == (b"low-1", 2)
    assert broker.pending("low") == 2  # low-0 (unacked, still held) and low-1


async def test_a_cancelled_msg_loses_nothing() -> None:
    # Given a reader whose msg() waits (a higher topic is given time to deliver)
    broker = MemoryBroker()
    broker.publish("low", b"low-0")
    reader = PriorityConsumer(_lanes(broker, "high", "low"), grace=60)
    waiting = asyncio.ensure_future(reader.msg())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    # When that call is cancelled (a runner ending at shutdown)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    # Then the message it had taken from the bus is handed to the next call
    reader.grace = 0
    message = await reader.msg()
    assert message is not None and message.body == b"low-0"
    await reader.stop()


async def test_a_drained_worker_ends_though_its_broadcast_reader_never_does() -> None:
    # Given a worker whose topic ends after two tasks, and a broadcast subscription that never ends
    broker = MemoryBroker()
    for i in range(2):
        broker.publish("t", Task.new("t", f"t-{i}").to_json())
    broker.close_topic("t")
    everyone = open_broadcast_consumer("memory:", "t", instance="w0")
    everyone.consumer = MemoryConsumer(broker, "t.all", "w0", from_end=True)
    started: list[str] = []
    launcher = Launcher(recording_worker(started), MemoryConsumer(broker, "t"), MemoryProducer(broker),
                        LauncherOptions(task_type="t"), broadcast=everyone)
    # When it runs
    await asyncio.wait_for(launcher.run(), 10)
    # Then it did both tasks and ended, its broadcast subscription gone with it
    assert started == ["t-0", "t-1"]
    assert not broker._copies.get("t.all")


async def test_a_broadcast_task_that_fails_does_not_end_the_worker_nor_count_to_its_lifetime() -> None:
    # Given a worker with a lifetime of 2 whose do_task raises for the broadcast task
    broker = MemoryBroker()

    class Fussy(Worker):
        def __init__(self, info: str) -> None:
            self.info = info

        async def do_task(self, ctx: TaskContext) -> Outcome:
            if self.info == "reload":
                raise RuntimeError("cannot reload")
            return completed("did %s", self.info)

    everyone = open_broadcast_consumer("memory:", "t", instance="w0")
    everyone.consumer = MemoryConsumer(broker, "t.all", "w0", from_end=True)
    launcher = Launcher(Fussy, MemoryConsumer(broker, "t"), MemoryProducer(broker),
                        LauncherOptions(task_type="t", lifetime_workers=2), broadcast=everyone)
    await everyone.start()
    run = asyncio.create_task(launcher.run())
    # When a broadcast task comes first, then two ordinary ones
    broker.publish("t.all", Task.new("t", "reload", meta={"scope": "all"}).to_json())
    while not broker.bodies("done"):
        await asyncio.sleep(0.01)
    for i in range(2):
        broker.publish("t", Task.new("t", f"t-{i}").to_json())
    await asyncio.wait_for(run, 10)
    # Then the broadcast task ended as error, and the worker went on to do both others
    done = [Task.from_json(b) for b in broker.bodies("done")]
    assert [(d.info, d.result, d.get_meta("instance")) for d in done] == [
        ("reload", "error", "w0"), ("t-0", "complete", ""), ("t-1", "complete", "")]
    assert "cannot reload" in done[0].msg
    assert broker.pending("t") == 0  # each acknowledged


def test_a_topic_list_with_a_gap_or_a_repeat_is_refused() -> None:
    assert split_topics("high, default ,low") == ["high", "default", "low"]
    assert split_topics("one") == ["one"]
    with pytest.raises(ConfigError, match="empty name"):
        split_topics("high,,low")
    with pytest.raises(ConfigError, match="names a topic twice"):
        split_topics("a,b,a")


def test_one_topic_keeps_the_buss_own_consumer_and_broadcast_is_on_beside_it() -> None:
    settings = WorkerSettings(worker="nop", type="t", bus="memory:units-one")
    launcher = Launcher.from_settings(recording_worker([]), settings)
    assert type(launcher.consumer) is MemoryConsumer  # not wrapped: the same per-task cost
    assert isinstance(launcher.broadcast, BroadcastConsumer)
    assert launcher.broadcast.consumer.info()["topic"] == "t.all"
    off = WorkerSettings(worker="nop", type="t", bus="memory:units-one", broadcast=False)
    assert Launcher.from_settings(recording_worker([]), off).broadcast is None


@pytest.mark.parametrize("bus", ["nop:", "file:-", "file:/tmp/units-one/tasks.jsonl", "file:/tmp/units-one/"])
def test_broadcast_by_default_does_without_where_the_bus_cannot_carry_it(bus: str) -> None:
    # a file directory read once to its end (no ?follow=1) exits when drained: nothing to wait for
    launcher = Launcher.from_settings(recording_worker([]), WorkerSettings(worker="nop", type="t", bus=bus))
    assert launcher.broadcast is None


def test_broadcast_flags_on_the_command_line() -> None:
    from task.apps.worker import WorkerApp
    from task.cli import build_parser
    from task.settings import load_settings

    parser = build_parser("worker", WorkerApp.Settings, "")
    for argv, value, explicit in ((["nop"], True, False), (["nop", "--broadcast"], True, True),
                                  (["nop", "--no-broadcast"], False, True)):
        args = vars(parser.parse_args(argv))
        for key in ("config", "gen_config", "show_config"):
            args.pop(key)
        settings = load_settings(WorkerSettings, **args)
        assert (settings.broadcast, "broadcast" in settings.model_fields_set) == (value, explicit)


def test_an_explicit_broadcast_on_stdin_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = taskbus("worker", "nop", "--type", "t", "--broadcast", "--bus", "file:-", cwd=tmp_path)
    assert out.returncode == 2 and "needs a directory" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


async def test_the_ledger_holds_one_entry_per_instance_of_a_broadcast_task() -> None:
    # Given two broadcast workers sharing a ledger, each blocked in the task
    broker = MemoryBroker.named("units-ledger")
    ledger = MemoryLedger()
    gate = asyncio.Event()
    started: list[str] = []

    class Blocked(Worker):
        def __init__(self, info: str) -> None:
            self.info = info

        async def do_task(self, ctx: TaskContext) -> Outcome:
            started.append(self.info)
            await gate.wait()
            return completed("done")

    runs = []
    launchers = []
    for name in ("w0", "w1"):
        settings = WorkerSettings(worker="nop", type="t", bus="memory:units-ledger", broadcast=True,
                                  instance=name, worker_kill_time=2)
        built = Launcher.from_settings(Blocked, settings)
        launcher = Launcher(Blocked, built.consumer, built.producer,
                            LauncherOptions(task_type="t", done_topic="done"), ledger,
                            broadcast=built.broadcast)
        launchers.append(launcher)
        assert launcher.broadcast is not None
        await launcher.broadcast.start()
        runs.append(asyncio.create_task(launcher.run()))
    # When one broadcast task is sent
    task = Task.new("t", "reload")
    await MemoryProducer(broker).send("t.all", task.to_json())
    while len(started) < 2:
        await asyncio.sleep(0.01)
    for _ in range(100):
        if await ledger.find("t", f"{task.id}@w1") and await ledger.find("t", f"{task.id}@w0"):
            break
        await asyncio.sleep(0.01)
    # Then each instance's run is outstanding under <id>@<instance>
    w0, w1 = await ledger.find("t", f"{task.id}@w0"), await ledger.find("t", f"{task.id}@w1")
    assert w0 is not None and w1 is not None and await ledger.find("t", task.id) is None
    assert w0.task.get_meta("instance") == "w0"
    # And once both are done, neither is
    gate.set()
    while len([b for t, b in broker.sent if t == "done"]) < 2:
        await asyncio.sleep(0.01)
    for launcher, run in zip(launchers, runs, strict=True):
        await launcher.stop()
        await run
    assert await ledger.find("t", f"{task.id}@w0") is None
    assert await ledger.find("t", f"{task.id}@w1") is None
    done = [Task.from_json(b) for t, b in broker.sent if t == "done"]
    assert sorted(d.get_meta("instance") for d in done) == ["w0", "w1"]


async def test_an_ordinary_task_is_recorded_under_its_own_id() -> None:
    ledger = MemoryLedger()
    recorder = LedgerRecorder(ledger)
    task = Task.new("t", "x", meta={"instance": "w0"})  # not sent with scope all
    recorder.started(task, "t")
    await recorder.close()
    assert await ledger.find("t", task.id) is not None


def test_send_scope_all_goes_to_the_broadcast_topic(tmp_path: Path) -> None:
    out = taskbus("send", "reload", "cache", "--scope", "all", "--bus", f"file:{tmp_path}/", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    sent = lines(tmp_path / "reload.all.jsonl")
    assert [(t["type"], t["info"], t["meta"]) for t in sent] == [("reload", "cache", "scope=all")]
    assert not (tmp_path / "reload.jsonl").exists()


def test_a_worker_on_a_topic_list_drains_it_in_priority_order(tmp_path: Path) -> None:
    # Given a file bus with tasks on low and high
    for topic in ("low", "high"):
        with (tmp_path / f"{topic}.jsonl").open("w") as bus_file:
            for i in range(3):
                bus_file.write(Task.new("t", f"{topic}-{i}").to_json().decode() + "\n")
    # When a worker reads high,low to the end
    out = taskbus("worker", "nop", "--type", "t", "--topic", "high,low", "--bus", f"file:{tmp_path}/",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # Then every high task was done before any low one
    done = [json.loads(line)["info"] for line in (tmp_path / "done.jsonl").read_text().splitlines()]
    assert done == [f"high-{i}" for i in range(3)] + [f"low-{i}" for i in range(3)]


def test_a_bad_topic_list_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = taskbus("worker", "nop", "--topic", "high,,low", "--bus", f"file:{tmp_path}/", cwd=tmp_path)
    assert out.returncode == 2 and "empty name" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


async def test_a_broadcast_run_sent_again_by_recover_is_done_under_the_same_entry() -> None:
    # Given the ledger entry of w0's run, which recover sends again with the id <id>@w0
    ledger = MemoryLedger()
    recorder = LedgerRecorder(ledger)
    again = Task.new("t", "reload", id="abc@w0", meta={"scope": "all", "instance": "w0"})
    # When a worker runs it and finishes it
    recorder.started(again, "t")
    await recorder.close()
    assert await ledger.find("t", "abc@w0") is not None
    recorder = LedgerRecorder(ledger)
    recorder.done("t", "abc@w0")
    await recorder.close()
    # Then that entry is done, not another one opened
    assert await ledger.find("t", "abc@w0") is None and await ledger.find("t", "abc@w0@w0") is None


@pytest.mark.parametrize(
    "url",
    ["memory:units-open", "file:/tmp/units-open/?follow=1", "nats://127.0.0.1:4222",
     "jetstream://127.0.0.1:4222", "kafka://127.0.0.1:9092", "nsq://127.0.0.1:4150"],
)
def test_each_bus_gives_a_broadcast_reader_its_own_channel_from_now_on(url: str) -> None:
    from task.bus.broadcast import BroadcastConsumer, open_broadcast_consumer

    opened = [open_broadcast_consumer(url, "cache", instance="host.example.com-12") for _ in range(2)]
    inner = [b.consumer for b in opened if isinstance(b, BroadcastConsumer)]
    assert [c.info()["topic"] for c in inner] == ["cache.all", "cache.all"]
    channels = [str(c.info().get("channel") or c.info().get("consumer") or getattr(c, "channel", "")) for c in inner]
    assert channels[0] != channels[1] and all(
        ch.replace(".", "_").startswith("host_example_com-12-") for ch in channels)  # JetStream: no dots
    if url.startswith("nsq"):
        assert all(ch.endswith("#ephemeral") for ch in channels)  # nsqd drops it when we leave
    elif not url.startswith("nats"):  # core NATS gives a new subscription only what comes next
        assert all(getattr(c, "from_end", False) for c in inner)  # only what is sent from start
    if url.startswith("file"):
        assert all(getattr(c, "offset_path", "x") is None for c in inner)  # no offset file left


async def test_an_occasional_high_task_does_not_hold_the_lower_topics_up() -> None:
    # Given a reader working through low tasks while high is empty
    broker = MemoryBroker()
    for i in range(3):
        broker.publish("low", f"low-{i}".encode())
    reader = PriorityConsumer(_lanes(broker, "high", "low"), grace=0.05)
    first = await reader.msg()
    assert first is not None and first.body == b"low-0"
    # When one high task comes after high had been empty for longer than the grace
    await asyncio.sleep(0.1)  # at least this long: a lower bound, never too short
    broker.publish("high", b"high-0")
    while reader._lanes[0].ready() is None:
        await asyncio.sleep(0)  # the reader has received it
    taken = await reader.msg()
    assert taken is not None and taken.body == b"high-0"
    # Then the next low task is handed out at once, not after waiting for another high one
    # (with a grace of an hour, waiting would time out here)
    reader.grace = 3600
    following = await asyncio.wait_for(reader.msg(), 5)
    assert following is not None and following.body == b"low-1"
    await reader.stop()


@pytest.mark.parametrize("bus", ["file:-", "file:/tmp/units-one/tasks.jsonl"])
@pytest.mark.parametrize("mode", [{"broadcast": True}, {"topic": "high,low"}])
def test_modes_on_a_file_bus_that_is_not_a_directory_are_refused(bus: str, mode: dict[str, object]) -> None:
    settings = WorkerSettings.model_validate({"worker": "nop", "type": "t", "bus": bus, **mode})
    with pytest.raises(ConfigError, match="needs a directory"):
        Launcher.from_settings(recording_worker([]), settings)


async def test_the_first_topic_keeps_up_to_its_prefetch_and_stop_gives_all_back() -> None:
    # Given a reader whose first topic has a prefetch of 3 (max_in_progress), with 6 tasks
    broker = MemoryBroker()
    for i in range(6):
        broker.publish("work", f"w-{i}".encode())
    reader = PriorityConsumer([MemoryConsumer(broker, "work", "w", prefetch=3),
                               MemoryConsumer(broker, "low", "w")], grace=0)
    first = await reader.msg()
    assert first is not None and first.body == b"w-0"
    for _ in range(3):
        await asyncio.sleep(0)  # the kept fetches take their messages
    # Then it keeps 3 more ready, no more: the rest stay on the topic for other workers
    assert [m.body for m in broker.topic("work").ready] == [b"w-4", b"w-5"]
    # When it stops, the 3 kept go back (in front of nothing lost)
    await reader.stop()
    again = sorted((m.body, m.attempt) for m in broker.topic("work").ready)
    assert again == [(b"w-1", 2), (b"w-2", 2), (b"w-3", 2), (b"w-4", 1), (b"w-5", 1)]


async def test_a_recurrent_task_read_from_low_comes_back_on_low(tmp_path: Path) -> None:
    # Given a recurrent task on the lowest of three topics of a file bus
    data = tmp_path / "data"
    data.mkdir()
    first = Task.new("nop", "x", meta={"every": "1h"})
    (data / "nop-low.jsonl").write_bytes(first.to_json() + b"\n")
    # When `taskbus worker` reads nop-high,nop,nop-low to the end, with a ledger
    out = await asyncio.to_thread(taskbus, "worker", "nop", "--topic", "nop-high,nop,nop-low",
                                  "--bus", "file:./data/", "--ledger", "sqlite:./ledger.db", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # Then its next run waits in the ledger to go back to nop-low, not to the first topic
    ledger = SqliteLedger(str(tmp_path / "ledger.db"))
    [entry] = await ledger.scheduled("nop", 10)
    await ledger.close()
    assert (entry.task.get_meta("prev"), entry.topic) == (first.id, "nop-low")


async def test_the_priority_reader_says_which_topic_a_recurrent_task_came_from() -> None:
    broker = MemoryBroker()
    recurrent = Task.new("t", "r", meta={"every": "1h"})
    broker.publish("low", recurrent.to_json())
    reader = PriorityConsumer(_lanes(broker, "high", "low"), grace=0)
    message = await reader.msg()
    assert message is not None
    assert reader.topic_of(recurrent) == "low"
    assert reader.topic_of(recurrent) is None  # forgotten once asked
    await reader.stop()


async def test_lower_topics_hold_no_more_than_max_in_progress_in_all() -> None:
    # Given a backlog of 4 tasks on each of high, default and low, and a worker reading
    # high,default,low with max_in_progress 1 that looks, at each task it starts, at how
    # many lower-priority messages its reader has taken from the bus and not handed out
    broker = MemoryBroker.named("units-bound")
    for name in ("high", "default", "low"):
        for i in range(4):
            broker.publish(f"b-{name}", Task.new("t", f"{name}-{i}").to_json())
    started: list[str] = []
    held: list[int] = []
    launcher: Launcher | None = None

    class Looks(Worker):
        def __init__(self, info: str) -> None:
            self.info = info

        async def do_task(self, ctx: TaskContext) -> Outcome:
            started.append(self.info)
            for _ in range(5):
                await asyncio.sleep(0)  # the reader's fetches run meanwhile
            assert launcher is not None
            topics = launcher.consumer.info()["topics"]
            assert isinstance(topics, list)
            held.append(sum(t["received"] - t["handed_out"] for t in topics[1:]))
            return completed("did %s", self.info)

    settings = WorkerSettings(worker="nop", type="t", bus="memory:units-bound", lifetime=12,
                              topic="b-high,b-default,b-low", max_in_progress=1, broadcast=False)
    launcher = Launcher.from_settings(Looks, settings)
    assert isinstance(launcher.consumer, PriorityConsumer)
    launcher.consumer.grace = 0.05
    # When it works through all of it
    await asyncio.wait_for(launcher.run(), 30)
    # Then it never held more than one lower-priority message (default and low together)
    assert len(held) == 12 and max(held) <= 1, held
    # And the order stayed strict: all high, then all default, then all low
    assert started == [f"{name}-{i}" for name in ("high", "default", "low") for i in range(4)]
    assert broker.pending("b-high") == broker.pending("b-default") == broker.pending("b-low") == 0


class _Refused(MemoryConsumer):
    """A broadcast subscription the broker refuses (no right to create ``<type>.all``)."""

    async def start(self) -> None:
        raise BusError("not allowed to create t.all")


async def test_a_broadcast_subscription_that_cannot_start_is_one_error_unless_asked_for(
        caplog: pytest.LogCaptureFixture) -> None:
    # Given a worker with one task waiting whose broadcast subscription is refused
    broker = MemoryBroker()
    broker.publish("t", Task.new("t", "t-0").to_json())
    broker.close_topic("t")
    started: list[str] = []
    launcher = Launcher(recording_worker(started), MemoryConsumer(broker, "t"), MemoryProducer(broker),
                        LauncherOptions(task_type="t"), broadcast=_Refused(broker, "t.all"))
    # When it runs with broadcast on by default
    await asyncio.wait_for(launcher.run(), 10)
    # Then it said so in one line and did its ordinary task
    assert started == ["t-0"]
    expected = ("broadcast tasks of 't' will not reach this worker: not allowed to create t.all "
                "(--no-broadcast does without them)")
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [expected]
    # And with --broadcast given explicitly, the worker does not start
    required = Launcher(recording_worker(started), MemoryConsumer(broker, "t"), MemoryProducer(broker),
                        LauncherOptions(task_type="t"), broadcast=_Refused(broker, "t.all"))
    required.broadcast_required = True
    with pytest.raises(BusError, match="not allowed"):
        await asyncio.wait_for(required.run(), 10)
