"""The deterministic runtime that runs workflow code (internal).

- ``loop``: the asyncio event loop that runs one run's coroutines in FIFO order and turns
  ``call_later`` into durable timers.
- ``instance``: one run's state: its workflow object, pending activities and timers, the
  commands of the current activation, and the ``_apply_<event>`` dispatcher.
- ``replay``: splits a history into the batches each activation saw and checks that replayed
  code produces the recorded commands.
- ``context``: which instance is active, for the module-level ``duro.workflow`` functions.
"""
