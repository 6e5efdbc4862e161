"""duro.testing: test workflows and activities fast, on the real engine.

Layout:

- ``WorkflowEnvironment`` (``environment``): the engine in-process on SQLite, with a worker,
  a client and a clock that skips idle time, so a three-day timeout is tested in milliseconds;
  activities can be mocked by name.
- ``ActivityEnvironment`` (``activity_env``): call an activity function directly with a chosen
  ``activity.info()``, capture its heartbeats, cancel it.
- ``replay_history`` / ``replay_histories`` (``replay``): check in a test that the current code
  replays exported histories; ``duro.Replayer`` (what ``duro replay`` runs) underneath, but a
  divergence raises.
- ``pytest_plugin``: the ``duro_env``, ``duro_client`` and ``duro_worker`` fixtures, loaded by
  pytest through duro's ``pytest11`` entry point.

See docs/testing.md.
"""

from duro.testing.activity_env import ActivityEnvironment
from duro.testing.environment import WorkflowEnvironment, WorkflowTaskFailedError
from duro.testing.replay import replay_histories, replay_history

__all__ = [
    "ActivityEnvironment",
    "WorkflowEnvironment",
    "WorkflowTaskFailedError",
    "replay_histories",
    "replay_history",
]
