"""Peak memory of a worker over a large backlog: ``python -m task.bench.memory --bus URL -n N``.

A worker must hold what it runs, not what waits: its memory is bounded by
``max_in_progress``, whatever the backlog. This fills a fresh topic with ``n`` no-op tasks,
starts ``taskbus worker nop`` over it as a child process, samples the child's
resident memory (psutil when installed, else ``/proc/PID/status``) and its progress
(``/stats``) every ``interval``, and once all ``n`` are done reports the peak: the kernel's
high-water mark of the child (``VmHWM``), so no short spike between samples is missed. (Not
``ru_maxrss`` from ``wait4``: Linux carries it over from the fork, so it starts at the size
of the process that started the worker.)

Run by hand (not in CI): ``python -m task.bench.memory --bus file:/tmp/bm/ -n 1000000`` or
``--bus jetstream://127.0.0.1:4222``. The fault suite runs the same code at 20,000 tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from task.bus.file import FileOptions
from task.bus.registry import open_producer, scheme_of
from task.task import Task

__all__ = ["MemoryRun", "fill", "main", "measure", "peak_rss_bytes", "rss_bytes"]

#: sends in flight while filling a broker topic: enough to hide the round trip
FILL_WINDOW = 500


@dataclass
class MemoryRun:
    """One run: the peak, and (tasks finished, RSS) samples that show whether it was flat."""

    bus: str
    tasks: int
    max_in_progress: int
    task_bytes: int
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    samples: list[tuple[int, int]] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def peak_rss_mb(self) -> float:
        return round(self.peak_rss_bytes / 2**20, 1)


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """The high-water mark of ``pid``'s resident memory (Linux ``VmHWM``); None elsewhere."""
    return _status_kb(pid, "VmHWM")


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` now; None when it is gone."""
    try:
        import psutil  # type: ignore[import-untyped]  # optional: only read if installed
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None
    return _status_kb(pid, "VmRSS")


async def fill(url: str, topic: str, n: int, size: int) -> None:
    """Put ``n`` no-op tasks of about ``size`` bytes on ``topic``, waiting for each confirmation.

    The file bus gets one buffered write (a million sends would measure the filling, not the
    worker); a broker gets ``FILL_WINDOW`` sends in flight.
    """
    pad = "p" * max(0, size - 80)
    if scheme_of(url) == "file":
        await asyncio.to_thread(_fill_file, FileOptions.from_url(url).topic_file(topic), n, pad)
        return
    async with open_producer(url) as producer:
        pending: set[asyncio.Task[None]] = set()
        for i in range(n):
            body = Task("nop", f"pad={pad}", id=f"m{i}").to_json()
            pending.add(asyncio.create_task(producer.send(topic, body)))
            if len(pending) >= FILL_WINDOW:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for sent in done:
                    sent.result()
        await asyncio.gather(*pending)


def _fill_file(path: Path, n: int, pad: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        out.writelines(Task("nop", f"pad={pad}", id=f"m{i}").to_json() + b"\n" for i in range(n))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _finished(port: int) -> int | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5.0)
        return int(json.loads(raw.partition(b"\r\n\r\n")[2])["tasks_finished"])
    except (OSError, TimeoutError, ValueError, KeyError):
        return None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def measure(url: str, n: int, *, max_in_progress: int = 100, size: int = 200,
                  interval: float = 1.0, log: Path | None = None,
                  verbose: bool = False) -> MemoryRun:
    """Fill a fresh topic on ``url`` with ``n`` tasks, run a worker over them, measure it.

    Raises:
        RuntimeError: the worker exited with an error before finishing ``n`` tasks.
    """
    topic = "mem_" + uuid.uuid4().hex[:8]
    await fill(url, topic, n, size)
    run = MemoryRun(scheme_of(url), n, max_in_progress, size)
    port = _free_port()
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115, ASYNC230 - once, before the run
    began = time.perf_counter()
    # the worker must still be alive when the last task is done, to read its high-water mark
    worker_url = url + ("&" if "?" in url else "?") + "follow=1" if run.bus == "file" else url
    child = subprocess.Popen(  # noqa: ASYNC220 - spawning is quick; the run is what is timed
        [sys.executable, "-m", "task.cli", "worker", "nop", "--bus", worker_url, "--topic", topic,
         "--type", "nop", "--done-topic", topic + "_done", "--max-in-progress", str(max_in_progress),
         "--status-port", str(port), "--log-level", "warning"],
        stdout=out, stderr=subprocess.STDOUT,
    )
    try:
        while child.poll() is None:
            rss = rss_bytes(child.pid)
            finished = await _finished(port)
            if rss is not None and finished is not None:
                run.samples.append((finished, rss))
                if verbose:
                    print(f"{finished:>10,d} tasks  rss {rss / 2**20:8.1f} MiB", file=sys.stderr, flush=True)
            if finished is not None and finished >= n:
                # all done and still alive: its high-water mark covers the whole run
                peak = peak_rss_bytes(child.pid)
                run.peak_rss_bytes = max(peak or 0, *(r for _, r in run.samples))
                child.terminate()
                await asyncio.to_thread(child.wait)
                break
            await asyncio.sleep(interval)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if log is not None and not isinstance(out, int):
            out.close()
    run.seconds = round(time.perf_counter() - began, 2)
    run.exit_code = child.returncode
    if child.returncode != 0 or not run.peak_rss_bytes:
        raise RuntimeError(f"the worker exited with status {child.returncode} before it was measured")
    return run


def main(argv: list[str] | None = None) -> int:
    """The by-hand run; prints one JSON object (``--json``) or a line per figure."""
    parser = argparse.ArgumentParser(prog="python -m task.bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bus", required=True, help="file:DIR/ or jetstream://h:p (any bus URL)")
    parser.add_argument("-n", type=int, default=1_000_000, help="tasks in the backlog")
    parser.add_argument("--max-in-progress", type=int, default=100)
    parser.add_argument("--size", type=int, default=200, help="bytes per task")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    url = args.bus
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if url in ("file:", "file:-"):
        tmp = tempfile.TemporaryDirectory(prefix="taskbus-memory-")
        url = f"file:{tmp.name}/"
    try:
        run = asyncio.run(measure(url, args.n, max_in_progress=args.max_in_progress, size=args.size,
                                  interval=args.interval, verbose=not args.json))
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps({**asdict(run), "peak_rss_mb": run.peak_rss_mb}))
    else:
        curve = run.samples[:: max(1, len(run.samples) // 10)]
        print(f"{run.bus}: {run.tasks:,d} tasks of {run.task_bytes} bytes, max_in_progress "
              f"{run.max_in_progress}: peak RSS {run.peak_rss_mb} MiB in {run.seconds}s")
        print("RSS over the run (tasks done: MiB): " +
              ", ".join(f"{done:,d}: {rss / 2**20:.1f}" for done, rss in curve))
    return 0


if __name__ == "__main__":
    sys.exit(main())
