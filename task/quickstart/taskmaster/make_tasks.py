"""A taskmaster: creates one hello task per name and sends it to the bus.

Run it:   python -m task.quickstart.taskmaster.make_tasks Ada Grace Linus
"""

from __future__ import annotations

import asyncio
import sys

from task import Task
from task.bus import open_producer
from task.ledger import open_ledger

NAMES = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Barbara Liskov", "Edsger Dijkstra",
         "Margaret Hamilton", "Donald Knuth", "Frances Allen", "Ken Thompson", "Radia Perlman"]


async def make_tasks(names: list[str], bus: str = "file:./taskbus-data/",
                     ledger_url: str = "sqlite:./taskbus-data/ledger.db") -> list[Task]:
    """Send one ``hello`` task per name, recording each in the ledger first."""
    ledger = open_ledger(ledger_url)
    tasks = [Task.new("hello", name) for name in names]
    async with open_producer(bus) as producer:
        for task in tasks:
            await ledger.created(task)  # outstanding until a worker reports it done
            await producer.send("hello", task.to_json())
    await ledger.close()
    return tasks


if __name__ == "__main__":
    sent = asyncio.run(make_tasks(sys.argv[1:] or NAMES))
    print(f"sent {len(sent)} hello tasks to ./taskbus-data/hello.jsonl")
