"""Activity mocking: the environment's workers run activities through a table of stand-ins.

A worker resolves activities by name once, when it is built. To let a test replace an activity
at any moment (also after the fixtures started the worker), every activity registered through a
``WorkflowEnvironment`` is wrapped in a stand-in of the same name, with the real activity's
options and argument types, that looks the implementation up at each attempt: the mock if one is
set, else the real function. Sync implementations run in a thread pool with the attempt's
context copied in, as a worker runs sync activities, so ``activity.info()`` works in both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from duro.converter import signature_of
from duro.definitions import ActivityDefinition, activity_definition, set_activity_definition


def _implementation(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The plain function behind an ``@activity.defn`` object (itself otherwise)."""
    defn = activity_definition(fn)
    return defn.fn if defn is not None else fn


def activity_name(target: Callable[..., Any] | str) -> str:
    """The activity type name of ``target``: a name, or an ``@activity.defn`` function."""
    if isinstance(target, str):
        return target
    defn = activity_definition(target)
    if defn is None:
        raise TypeError(
            f"{target!r} is not an activity: pass its name or the @activity.defn function"
        )
    return defn.name


class ActivityTable:
    """Real activities and their mocks by name, shared by all workers of one environment."""

    def __init__(self) -> None:
        self._definitions: dict[str, ActivityDefinition] = {}
        self._mocks: dict[str, Callable[..., Any]] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def names(self) -> set[str]:
        return set(self._definitions)

    def mock(self, name: str, replacement: Callable[..., Any]) -> None:
        self._mocks[name] = _implementation(replacement)

    def stand_ins(self, activities: Iterable[Callable[..., Any]]) -> list[Callable[..., Any]]:
        """Stand-ins to register on a worker for ``activities`` (and the mocks set so far)."""
        chosen: dict[str, ActivityDefinition] = {}
        for act in activities:
            defn = activity_definition(act)
            if defn is None:
                raise TypeError(f"{act!r} is not an activity: decorate it with @activity.defn")
            chosen[defn.name] = defn
        for name, fn in self._mocks.items():
            if name not in chosen and name not in self._definitions:
                # Mocked before any real activity of that name was registered: the mock's own
                # signature decodes the arguments.
                chosen[name] = ActivityDefinition(
                    name=name,
                    fn=fn,
                    is_async=inspect.iscoroutinefunction(fn),
                    signature=signature_of(fn),
                )
        self._definitions.update(chosen)
        return [self._stand_in(defn) for defn in chosen.values()]

    def _stand_in(self, defn: ActivityDefinition) -> Callable[..., Any]:
        name, real = defn.name, defn.fn

        async def stand_in(*args: Any) -> Any:
            return await self._call(self._mocks.get(name, real), args)

        stand_in.__qualname__ = stand_in.__name__ = name
        set_activity_definition(stand_in, dataclasses.replace(defn, fn=stand_in, is_async=True))
        return stand_in

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=32, thread_name_prefix="duro-test-activity"
            )
        ctx = contextvars.copy_context()
        result = await asyncio.get_running_loop().run_in_executor(
            self._executor, ctx.run, fn, *args
        )
        if inspect.isawaitable(result):  # a plain function (or mock) that returns a coroutine
            result = await result
        return result

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
