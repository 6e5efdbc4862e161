"""A worker process for the end-to-end tests; runs until killed (or SIGTERM/SIGINT).

Run from the repository root::

    python -m tests.e2e.worker_main --db sqlite:////tmp/x/duro.db \
        --liveness-timeout 1.0 --heartbeat-interval 0.2

When the worker is about to start polling it appends ``ready - - - <pid> <time>`` to the
``$DURO_E2E_LOG`` file (the same file the activities log their executions to).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from datetime import timedelta

from duro import Client, Worker
from tests.e2e import app, scale_app
from tests.e2e.app import LOG_ENV

APPS = {"crash": app, "scale": scale_app}


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="store URL, e.g. sqlite:////path/duro.db")
    parser.add_argument("--app", choices=sorted(APPS), default="crash")
    parser.add_argument("--liveness-timeout", type=float, default=5.0, help="seconds")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--max-poll-wait", type=float, default=1.0, help="seconds")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _announce_ready() -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"ready - - - {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


async def _main(args: argparse.Namespace) -> None:
    module = APPS[args.app]
    client = await Client.connect(args.db)
    try:
        worker = Worker(
            client,
            task_queue=module.TASK_QUEUE,
            workflows=module.WORKFLOWS,
            activities=module.ACTIVITIES,
            liveness_timeout=timedelta(seconds=args.liveness_timeout),
            heartbeat_interval=timedelta(seconds=args.heartbeat_interval),
            max_poll_wait=timedelta(seconds=args.max_poll_wait),
            identity=f"e2e-{os.getpid()}",
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_shutdown)
        _announce_ready()
        await worker.run()
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
