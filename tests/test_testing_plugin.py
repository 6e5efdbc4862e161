"""The pytest plugin in a fresh project: docs/testing.md's worked example, run by a new pytest.

The project is a temp folder holding only the example's two files and a pytest.ini; duro is
found as an installed package (this venv's editable install), and its fixtures through the
``pytest11`` entry point — there is no conftest. This proves the docs' example and the plugin
together, in both pytest-asyncio modes, offline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "testing.md"


def example_files() -> dict[str, str]:
    """The doc's python blocks whose first line names a file (``# approval.py``)."""
    files = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S):
        named = re.fullmatch(r"# (\w+\.py)", block.splitlines()[0])
        if named:
            files[named.group(1)] = block
    return files


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_docs_example_passes_in_a_fresh_project(tmp_path: Path, mode: str) -> None:
    files = example_files()
    assert set(files) == {"approval.py", "test_approval.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\n"
        f"asyncio_mode = {mode}\n"
        "asyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    summary = re.search(r"(\d+) passed in ([\d.]+)s", output)
    assert summary is not None, output
    assert int(summary.group(1)) == 4, output
    # "in well under a second" for the four tests, environments included; 3 s leaves room for
    # a loaded CI machine without letting real waiting (a 3-day timer) slip through.
    assert float(summary.group(2)) < 3.0, output
