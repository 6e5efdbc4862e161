"""Determinism guards: each fires on the first run with a message that says what to do instead.

They are active only while workflow code runs: activities on the same worker, at the same time,
use clocks, randomness, files and the network freely.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import random
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from random import randint
from time import time as wall_clock

import httpx
import openai
import pytest

from duro import Client, DuroError, Worker, activity, workflow
from duro.store.protocol import ExecutionInfo

# -- a local stand-in for a model API -----------------------------------------------------------


class _ModelAPI(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # OpenAI-shaped chat completion
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        body = json.dumps(
            {
                "id": "cmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "local",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "hello from the model"},
                    }
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def model_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


MODEL_URL: dict[str, str] = {}
# The first-week mistake: an SDK client created at import time and called from workflow code.
_openai = openai.AsyncOpenAI(api_key="test", base_url="http://127.0.0.1:9/v1", max_retries=0)


def _openai_client() -> openai.AsyncOpenAI:
    return _openai.with_options(base_url=MODEL_URL["url"] + "/v1")


# -- workflows that break the rules ---------------------------------------------------------------


@workflow.defn
async def reads_clock() -> float:
    return time.time()


@workflow.defn
async def reads_imported_clock() -> list[float]:
    return [wall_clock(), randint(0, 9)]


@workflow.defn
async def reads_datetime_now() -> str:
    return datetime.datetime.now().isoformat()


@workflow.defn
async def draws_random() -> float:
    return random.random()


@workflow.defn
async def makes_uuid() -> str:
    return str(uuid.uuid4())


@workflow.defn
async def reads_urandom() -> str:
    return os.urandom(4).hex()


@workflow.defn
async def opens_file(path: str) -> str:
    return Path(path).read_text()


@workflow.defn
async def calls_httpx(url: str) -> str:
    return httpx.get(url).text


@workflow.defn
async def calls_openai() -> str:
    reply = await _openai_client().chat.completions.create(
        model="local", messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content or ""


@workflow.defn
async def runs_subprocess() -> int:
    return subprocess.run(["true"], check=False).returncode


@workflow.defn
async def starts_thread() -> None:
    threading.Thread(target=lambda: None).start()


@workflow.defn
async def swallows_the_error() -> str:
    try:
        time.time()
    except Exception:
        return "hid it"
    return "no error"


@workflow.defn
async def busy_loop() -> None:
    deadline = (
        time.monotonic() + 30
    )  # monotonic is not guarded: only the deadlock detector stops this
    while time.monotonic() < deadline:
        pass


@workflow.defn
async def uses_escape_hatch(path: str) -> list[object]:
    with workflow.unsafe.allow("time", "file"):
        stamp = time.time()
        text = Path(path).read_text()
    return [stamp > 0, text]


# -- activities may do anything, even while workflows run ------------------------------------------


@activity.defn
async def async_everything(url: str, path: str) -> list[object]:
    async with httpx.AsyncClient() as http:
        fetched = (await http.get(url)).text
    client = openai.AsyncOpenAI(api_key="test", base_url=url + "/v1", max_retries=0)
    reply = await client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "hi"}]
    )
    return [
        time.time() > 0,
        datetime.datetime.now().year > 2000,
        0 <= random.random() < 1,
        len(str(uuid.uuid4())),
        Path(path).read_text(),
        "model" in fetched,
        reply.choices[0].message.content,
    ]


@activity.defn
def sync_everything(url: str) -> list[object]:
    out = subprocess.run(["echo", "ok"], capture_output=True, text=True, check=True).stdout
    return [httpx.get(url).status_code, out.strip(), len(os.urandom(3))]


@workflow.defn
async def delegates(url: str, path: str) -> list[object]:
    a = await async_everything(url, path)
    b = await sync_everything(url)
    return [*a, *b, workflow.now().year > 2000]


WORKFLOWS = [
    reads_clock,
    reads_imported_clock,
    reads_datetime_now,
    draws_random,
    makes_uuid,
    reads_urandom,
    opens_file,
    calls_httpx,
    calls_openai,
    runs_subprocess,
    starts_thread,
    swallows_the_error,
    busy_loop,
    uses_escape_hatch,
    delegates,
]


@pytest.fixture
async def worker(client: Client, model_api: str) -> AsyncIterator[Worker]:
    MODEL_URL["url"] = model_api
    async with Worker(
        client,
        workflows=WORKFLOWS,
        activities=[async_everything, sync_everything],
        deadlock_timeout=timedelta(milliseconds=300),
    ) as w:
        yield w


async def task_failure(client: Client, wf: object, *args: object) -> dict[str, object]:
    handle = await client.start_workflow(wf, *args, id=f"g-{uuid.uuid4().hex[:8]}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    info: ExecutionInfo
    while True:
        info = await handle.describe()
        if info.workflow_task_failure is not None or info.status.closed:
            break
        assert loop.time() < deadline, "the guard did not fire"
        await asyncio.sleep(0.01)
    assert info.status.value == "Running", "a guard fails the task, not the run"
    assert info.workflow_task_failure is not None
    await handle.terminate("test over")
    return info.workflow_task_failure


def this_file_line(text: str) -> str:
    for n, line in enumerate(Path(__file__).read_text().splitlines(), start=1):
        if text in line:
            return f"{__file__}:{n}"
    raise AssertionError(text)


@pytest.mark.parametrize(
    ("wf", "call", "hint", "line"),
    [
        (reads_clock, "time.time()", "workflow.now()", "return time.time()"),
        (reads_datetime_now, "datetime.now()", "workflow.now()", "datetime.datetime.now()"),
        (reads_imported_clock, "time.time()", "workflow.now()", "return [wall_clock(), randint"),
        (draws_random, "random.random()", "workflow.random()", "return random.random()"),
        (makes_uuid, "uuid.uuid4()", "workflow.uuid4()", "str(uuid.uuid4())"),
        (reads_urandom, "os.urandom()", "workflow.random()", "os.urandom(4)"),
        (runs_subprocess, "subprocess", "activity", 'subprocess.run(["true"]'),
        (
            starts_thread,
            "threading.Thread.start()",
            "asyncio tasks",
            "threading.Thread(target=lambda: None).start()",
        ),
        (swallows_the_error, "time.time()", "workflow.now()", "        time.time()"),
    ],
)
async def test_guard_fires_on_first_run_naming_call_workflow_and_line(
    client: Client, worker: Worker, wf: object, call: str, hint: str, line: str
) -> None:
    failure = await task_failure(client, wf)
    message = str(failure["message"])
    assert failure["type"] == "NondeterministicCallError"
    assert call in message
    assert repr(getattr(wf, "__name__", "")) in message
    assert hint in message
    assert this_file_line(line) in message


async def test_file_io_is_caught(client: Client, worker: Worker, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("secret")
    failure = await task_failure(client, opens_file, str(path))
    assert "file I/O (open)" in str(failure["message"])
    assert "move it into an activity" in str(failure["message"])


async def test_http_client_is_caught(client: Client, worker: Worker, model_api: str) -> None:
    failure = await task_failure(client, calls_httpx, model_api)
    message = str(failure["message"])
    assert "network connection" in message or "DNS lookup" in message
    assert "move it into an activity" in message
    assert this_file_line("httpx.get(url).text") in message


async def test_openai_sdk_is_caught(client: Client, worker: Worker) -> None:
    failure = await task_failure(client, calls_openai)
    message = str(failure["message"])
    assert failure["type"] == "NondeterministicCallError"
    assert "move it into an activity" in message
    assert this_file_line("reply = await _openai_client().chat.completions.create(") in message


async def test_deadlock_detector_names_the_run_and_the_stack(
    client: Client, worker: Worker
) -> None:
    failure = await task_failure(client, busy_loop)
    message = str(failure["message"])
    assert failure["type"] == "DeadlockError"
    assert "did not yield for 0.3 s" in message
    assert "busy_loop" in message and "while time.monotonic() < deadline" in message


async def test_escape_hatch_lets_the_block_through(
    client: Client, worker: Worker, tmp_path: Path
) -> None:
    path = tmp_path / "config.txt"
    path.write_text("cfg")
    result = await client.execute_workflow(uses_escape_hatch, str(path), id="hatch")
    assert result == [True, "cfg"]


async def test_activities_are_never_guarded(
    client: Client, worker: Worker, model_api: str, tmp_path: Path
) -> None:
    path = tmp_path / "data.txt"
    path.write_text("data")
    result = await client.execute_workflow(delegates, model_api, str(path), id="acts")
    assert result == [
        True,
        True,
        True,
        36,
        "data",
        True,
        "hello from the model",
        200,
        "ok",
        3,
        True,
    ]


async def test_guards_can_be_switched_off_per_worker(client: Client) -> None:
    async with Worker(client, workflows=[reads_clock], determinism_guards=False):
        assert await client.execute_workflow(reads_clock, id="off") > 0


def test_guards_are_inactive_outside_workflow_code() -> None:
    from duro.runtime import guards

    guards.install()
    assert time.time() > 0 and random.random() < 1 and uuid.uuid4()
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()


def test_unknown_escape_hatch_kind_is_a_clear_error() -> None:
    from duro.runtime import guards

    with pytest.raises(ValueError, match="unknown kind 'clock'"):
        list(guards.iter_kinds(("clock",)))


def test_static_check_skips_calls_inside_the_escape_hatch() -> None:
    from duro.runtime.guards import scan

    @workflow.defn
    async def fine() -> str:
        with workflow.unsafe.allow("time"):
            return datetime.datetime.now().isoformat()

    assert scan(fine) == []
    assert [f.call for f in scan(reads_datetime_now)] == ["datetime.now()"]


def test_errors_are_duro_errors() -> None:
    from duro.errors import DeadlockError, NondeterministicCallError

    assert issubclass(NondeterministicCallError, DuroError)
    assert issubclass(DeadlockError, DuroError)
