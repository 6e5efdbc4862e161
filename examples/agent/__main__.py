"""Run the example agent end to end: ``python -m examples.agent`` (or ./scripts/example).

Starts a worker in this process, starts a ``TravelAgent`` run, prints its history as it grows,
and asks you to approve the booking (or approves by itself when there is no terminal, e.g. CI).
Run it again after killing it: the same workflow id resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from duro import (
    Client,
    Event,
    IdConflictPolicy,
    IdReusePolicy,
    Worker,
    WorkflowAlreadyStartedError,
)
from examples.agent.agent import (
    TravelAgent,
    TripRequest,
    TripResult,
    book_flight,
    call_model,
    search_flights,
)


def _summary(event: Event) -> str:
    a = event.attrs
    if "activity_type" in a:
        return f"{a['activity_type']}"
    if event.type.value == "ActivityTaskCompleted":
        return f"seq {a['seq']} after {a['attempt']} attempt(s)"
    if event.type.value == "TimerStarted":
        return f"{a['duration']:.1f} s"
    if event.type.value == "WorkflowExecutionSignaled":
        return f"{a['name']}({', '.join(map(str, a.get('args', [])))})"
    return ""


async def _ask(prompt: str) -> bool:
    answer = await asyncio.to_thread(input, prompt)
    return answer.strip().lower() in ("y", "yes")


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.agent", description=__doc__)
    parser.add_argument("--db", default="sqlite:///agent.db", help="database URL")
    parser.add_argument("--id", default="trip-1", help="workflow id (rerun resumes it)")
    parser.add_argument("--request", default="Two seats Paris -> Lisbon, May 3rd")
    parser.add_argument("--settle-seconds", type=float, default=2.0)
    parser.add_argument(
        "--approve",
        choices=["ask", "yes", "no", "cli"],
        default="ask" if sys.stdin.isatty() else "yes",
        help="ask on the terminal (default with a terminal), approve or decline at once, "
        "or wait for `duro workflow signal ... approve`",
    )
    args = parser.parse_args()

    client = await Client.connect(args.db)
    worker = Worker(
        client,
        task_queue="agents",
        workflows=[TravelAgent],
        activities=[call_model, search_flights, book_flight],
    )
    async with worker:
        try:
            # Running: resume it (a killed run continues); closed: show its result.
            handle = await client.start_workflow(
                TravelAgent.run,
                TripRequest(args.request, args.settle_seconds),
                id=args.id,
                task_queue="agents",
                id_conflict_policy=IdConflictPolicy.USE_EXISTING,
                id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            handle = client.get_workflow_handle(args.id, result_type=TripResult)
            print(f"workflow {args.id} already finished (use --id to start another)")
        print(f"workflow {handle.id} (run {handle.run_id}) on {args.db}")
        seen, asked = 0, False
        started = time.monotonic()
        while True:
            for event in (await handle.fetch_history())[seen:]:
                print(f"  {event.event_id:3d} {event.type.value:28s} {_summary(event)}")
                seen = event.event_id
            info = await handle.describe()
            if info.status.closed:
                break
            if not asked and await handle.query(TravelAgent.status) == "awaiting approval":
                asked = True
                if args.approve == "cli":
                    print(
                        f"  waiting for approval: duro workflow signal {handle.id} approve "
                        f"--input true --db {args.db}"
                    )
                else:
                    ok = args.approve == "yes" or (
                        args.approve == "ask" and await _ask("  approve the booking? [y/N] ")
                    )
                    print(f"  sending approve({str(ok).lower()})")
                    await handle.signal(TravelAgent.approve, ok)
            await asyncio.sleep(0.1)
        result = await handle.result()
        print(f"result after {time.monotonic() - started:.1f} s: {result.summary}")
        if result.booking:
            print(f"  {result.booking}")
    await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
