"""One small, runnable example per duro concept (see docs/concepts/).

Run one with ``.venv/bin/python -m examples.concepts.<name> [db path]``; each ``main(db_path)``
opens a client and a worker on that SQLite file, runs its scenario end to end and asserts the
outcome (tests/test_examples.py runs them all).
"""
