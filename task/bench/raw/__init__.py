"""Raw client loops that ``taskbus bench`` measures our buses against, one module per bus.

Each module has ``async def raw_loop(url, *, n, max_in_progress, credentials) -> Timing``:
it publishes ``n`` no-op tasks (untimed), then times consuming them with the fastest loop
the client allows under the bus's guarantee (each done message confirmed before the ack or
commit of its task, where the bus has confirmations), and returns the wall and process CPU
time of that part (``task.bench.timing``). The NATS, JetStream and Kafka loops are the peer
harness's (``../shared/bench/s_nats_core.py``, ``s_nats_js_confirmed.py``, ``s_kafka.py``):
same client calls, same batch sizes, orjson for the done message (``tasks``), so
``max_in_progress`` applies to the Launcher only; they also take ``topic=`` so a test can
watch the done topic. The NSQ loop runs ``max_in_progress`` handlers. None of taskbus's
consumer, producer or Launcher code runs in the timed part.
"""
