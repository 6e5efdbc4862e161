"""Every concept example runs end to end (its own asserts pass), and each has a docs page."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "concepts"
PAGES = ROOT / "docs" / "concepts"

NAMES = sorted(p.stem for p in EXAMPLES.glob("*.py") if p.stem != "__init__")


def test_there_are_examples() -> None:
    assert len(NAMES) >= 10, NAMES


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", NAMES)
async def test_example_runs(name: str, tmp_path: Path) -> None:
    module = importlib.import_module(f"examples.concepts.{name}")
    assert module.__doc__, f"examples/concepts/{name}.py needs a module docstring"
    await module.main(str(tmp_path / "x.db"))


def test_every_example_has_a_page_and_every_page_an_example() -> None:
    pages = sorted(p.stem for p in PAGES.glob("*.md"))
    assert pages == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_page_includes_its_example_and_the_index_links_it(name: str) -> None:
    page = (PAGES / f"{name}.md").read_text(encoding="utf-8")
    assert f"examples/concepts/{name}.py" in page
    assert f"python -m examples.concepts.{name}" in page
    index = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    assert f"(concepts/{name}.md)" in index
