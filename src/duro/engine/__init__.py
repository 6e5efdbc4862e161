"""Pure state transitions: (records, request, now) -> Transition.

No I/O and no clock reads: ``now`` is an argument, so both stores share every rule and the
rules are unit-tested without a database. One module per family of state changes.
"""
