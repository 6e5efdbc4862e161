"""A worker process for ``bench/scale.py``: the bench workloads on one database.

    python bench/scale_worker.py --db postgresql://… --ready /tmp/ready

Appends its pid to the ``--ready`` file when it starts polling; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

import workloads

from duro import Client, Worker


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--stats", help="write the store's transaction counts here at exit")
    args = parser.parse_args()
    client = await Client.connect(args.db)
    try:
        worker = Worker(
            client,
            workflows=workloads.WORKFLOWS,
            activities=workloads.ACTIVITIES,
            identity=f"bench-{os.getpid()}",
        )
        loop = asyncio.get_running_loop()
        async with worker:
            with open(args.ready, "a") as f:
                f.write(f"{os.getpid()}\n")
            stop = asyncio.Event()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
        if args.stats:
            counts = getattr(client.store, "operation_counts", {})
            with open(args.stats, "w") as f:
                json.dump(dict(counts), f)
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
