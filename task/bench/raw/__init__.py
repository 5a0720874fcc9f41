"""Raw client loops that ``taskbus bench`` measures our buses against, one module per bus.

Each module has ``async def raw_loop(url, *, n, max_in_progress, credentials) -> float``:
it publishes ``n`` no-op tasks (untimed), then times consuming them with ``max_in_progress``
concurrency using only the client library, each done message confirmed before the ack, and
returns the seconds taken. Same guarantees as the Launcher, none of our code in the loop.
"""
