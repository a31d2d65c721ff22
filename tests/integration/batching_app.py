"""A Faust app whose one agent reads a topic with :func:`~driftwatch.daemon.batching.take_batches` and records each
batch: ``python batching_app.py BOOTSTRAP TOPIC EXPECTED MAX_MESSAGES MAX_BYTES WITHIN OUT``.

Each batch is one JSON line in OUT: its messages as ``[partition, offset, value bytes]``. Once EXPECTED messages
were seen, the app stops itself with SIGTERM, as an operator would (Faust commits the acknowledged offsets).
Run by ``test_take_batches.py`` against the test session's broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import faust
from faust.worker import Worker

from driftwatch.daemon.batching import take_batches
from driftwatch.daemon.worker import faust_datadir


def main() -> None:
    bootstrap, topic_name, expected, max_messages, max_bytes, within, out = sys.argv[1:8]
    app = faust.App(
        os.environ.get("BATCHING_APP_ID", f"dw-batching-{uuid.uuid4().hex[:8]}"),
        broker=f"kafka://{bootstrap}",
        datadir=faust_datadir("dw-batching"),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_session_timeout=4.0,
        broker_heartbeat_interval=0.7,
        stream_buffer_maxsize=100,
    )
    topic = app.topic(topic_name, value_type=bytes, key_type=bytes)
    seen = 0

    async def read(stream: Any) -> None:
        nonlocal seen
        async for events in take_batches(stream, int(max_messages), int(max_bytes), float(within)):
            batch = [[e.message.partition, e.message.offset, len(e.message.value or b"")] for e in events]
            with Path(out).open("a") as record:
                record.write(json.dumps(batch) + "\n")
            seen += len(batch)
            if seen >= int(expected):
                os.kill(os.getpid(), signal.SIGTERM)

    app.agent(topic, name="read")(read)
    Worker(
        app, loglevel="warning", quiet=True, redirect_stdouts=False, loop=asyncio.new_event_loop()
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
