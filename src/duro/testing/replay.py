"""Replay exported histories in a test: prove a code change is safe for the runs in flight.

A history is the export of ``duro workflow show ID --json``:
``{"workflow_id": ..., "run_id": ..., "events": [...]}``. These helpers are the test-side face
of ``duro.Replayer`` (the code ``duro replay`` runs): same replay, same verdicts, but a history
that fails to replay *raises*, with the file named in a note, so a test fails with the
``NonDeterminismError`` that names the event, the recorded command and the produced one.
``duro.Replayer`` itself returns every verdict without raising, for reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from duro.history import Event
from duro.replayer import Replayer, ReplayResult

__all__ = ["replay_histories", "replay_history"]


def replay_history(
    history: str | os.PathLike[str] | Mapping[str, Any], workflows: Iterable[Any]
) -> ReplayResult:
    """Replay one exported history against ``workflows``; raise if the code diverges.

    Args:
        history: A file written by ``duro workflow show ID --json``, or its parsed JSON.
        workflows: The workflow classes or functions to replay with (the code to deploy); the
            history's workflow type picks one.

    Returns:
        The verdict (``ok``), for a test that wants the ids.

    Raises:
        NonDeterminismError: the code makes other decisions than the history records.
        UnknownWorkflowTypeError: no given workflow has the history's type.
        ValueError: the file is unreadable or not an export.
    """
    replayer = Replayer(list(workflows))
    if isinstance(history, Mapping):
        events = [Event.from_json(e) for e in history.get("events", [])]
        result = replayer.replay(
            events,
            source="<history>",
            workflow_id=str(history.get("workflow_id") or ""),
            run_id=str(history.get("run_id") or ""),
        )
    else:
        result = replayer.replay_file(os.fspath(history))
    _raise_for(result)
    return result


def replay_histories(
    folder: str | os.PathLike[str], workflows: Iterable[Any], *, pattern: str = "*.json"
) -> list[ReplayResult]:
    """Replay every history in ``folder`` matching ``pattern``; raise if any diverges.

    All files are replayed before raising, so one failing test run lists every broken history
    (an ``ExceptionGroup`` of their errors, each noted with its file).

    Raises:
        FileNotFoundError: no file in ``folder`` matches ``pattern`` (a wrong path must not
            pass silently).
    """
    paths = sorted(Path(folder).glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no histories matching {pattern!r} in {os.fspath(folder)!r}")
    results = Replayer(list(workflows)).replay_files(paths)
    failed = [r for r in results if not r.ok]
    if len(failed) == 1:
        _raise_for(failed[0])
    if failed:
        raise BaseExceptionGroup(
            f"{len(failed)} of {len(results)} histories in {os.fspath(folder)!r} do not replay",
            [_noted(r) for r in failed],
        )
    return results


def _noted(result: ReplayResult) -> BaseException:
    assert result.error is not None
    note = f"while replaying {result.source}"
    if note not in getattr(result.error, "__notes__", ()):
        result.error.add_note(note)
    return result.error


def _raise_for(result: ReplayResult) -> None:
    if result.error is not None:
        raise _noted(result)
