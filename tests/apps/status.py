"""Reading an app's status endpoint in tests."""

from __future__ import annotations

import asyncio
import json


async def get_stats(port: int) -> dict[str, object]:
    """GET /stats of the app serving on 127.0.0.1:``port``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    stats: dict[str, object] = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    return stats
