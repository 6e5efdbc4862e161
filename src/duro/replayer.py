"""The replay checker: replay stored histories against the current code before a deploy.

Like a database migration check: export histories of running (or recent) runs, or read them
straight from the store, replay each against the code about to be deployed, and refuse the
deploy if any diverges. ``duro replay`` is the command-line face of this module.

Example::

    replayer = Replayer([TravelAgent])
    results = replayer.replay_files(Path("tests/histories").glob("*.json"))
    assert all(r.ok for r in results), [str(r) for r in results if not r.ok]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duro.client import Client
from duro.definitions import WorkflowDefinition, workflow_definition
from duro.errors import UnknownWorkflowTypeError
from duro.history import Event
from duro.runtime.replay import advance, new_instance

__all__ = ["ReplayResult", "Replayer", "load_history"]


@dataclass(frozen=True)
class ReplayResult:
    """The verdict for one run."""

    workflow_id: str
    run_id: str
    workflow_type: str
    source: str
    """The file it came from, or ``store``."""
    error: BaseException | None = None
    """None when the history replayed cleanly; else why not (``NonDeterminismError``...)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        verdict = "ok" if self.ok else f"FAILED: {type(self.error).__name__}: {self.error}"
        run = f"{self.workflow_type} {self.workflow_id} (…{self.run_id[-12:]})"
        return f"{run} [{self.source}]: {verdict}"


def load_history(path: Path | str) -> tuple[str, str, list[Event]]:
    """Read a history exported by ``duro workflow show ID --json``: (workflow id, run id, events).

    Also accepts a bare JSON list of events.
    """
    try:
        data: Any = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read history file {str(path)!r}: {e}") from e
    raw = data.get("events") if isinstance(data, dict) else data
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{str(path)!r} holds no events (expected `duro workflow show --json`)")
    try:
        events = [Event.from_json(e) for e in raw]
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{str(path)!r}: malformed event: {e}") from e
    first = events[0].attrs
    workflow_id = data.get("workflow_id") if isinstance(data, dict) else None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return (
        str(workflow_id or first.get("workflow_id", "?")),
        str(run_id or first.get("run_id", "?")),
        events,
    )


class Replayer:
    """Replays histories against a set of workflow classes/functions (the code to deploy)."""

    def __init__(self, workflows: Sequence[Any], *, determinism_guards: bool = True) -> None:
        self._workflows: dict[str, WorkflowDefinition] = {}
        for wf in workflows:
            defn = workflow_definition(wf)
            if defn is None:
                raise TypeError(f"{wf!r} is not a workflow: decorate it with @workflow.defn")
            self._workflows[defn.name] = defn
        self._guards = determinism_guards

    def replay(
        self, events: Sequence[Event], *, source: str = "", workflow_id: str = "", run_id: str = ""
    ) -> ReplayResult:
        """Replay one history; never raises for a divergence (see ``ReplayResult.error``)."""
        attrs = events[0].attrs if events else {}
        wtype = str(attrs.get("workflow_type", "?"))
        wid = workflow_id or str(attrs.get("workflow_id", "?"))
        rid = run_id or str(attrs.get("run_id", "?"))
        defn = self._workflows.get(wtype)
        if defn is None:
            err: BaseException = UnknownWorkflowTypeError(wtype, list(self._workflows))
            return ReplayResult(wid, rid, wtype, source, err)
        try:
            if not events:
                raise ValueError("empty history")
            instance = new_instance(defn, events[0], determinism_guards=self._guards)
            advance(instance, events, events[-1].time)
        except Exception as e:
            return ReplayResult(wid, rid, wtype, source, e)
        return ReplayResult(wid, rid, wtype, source)

    def replay_file(self, path: Path | str) -> ReplayResult:
        try:
            wid, rid, events = load_history(path)
        except ValueError as e:
            return ReplayResult("?", "?", "?", str(path), e)
        return self.replay(events, source=str(path), workflow_id=wid, run_id=rid)

    def replay_files(self, paths: Iterable[Path | str]) -> list[ReplayResult]:
        """Replay files, and every ``*.json`` inside any folder given."""
        results: list[ReplayResult] = []
        for p in paths:
            path = Path(p)
            files = sorted(path.glob("*.json")) if path.is_dir() else [path]
            results.extend(self.replay_file(f) for f in files)
        return results

    async def replay_store(
        self, client: Client, query: str | None = None, *, limit: int = 1000
    ) -> list[ReplayResult]:
        """Replay the runs a visibility query selects (default: every running run)."""
        runs = await client.list_workflows(query or "Status = 'Running'", limit=limit)
        results = []
        for info in runs:
            events = await client.store.get_history(info.run_id)
            results.append(
                self.replay(
                    events, source="store", workflow_id=info.workflow_id, run_id=info.run_id
                )
            )
        return results
