"""Shared plumbing of the ``duro`` command line: options, connecting, errors, output.

Every command opens its own client (``run_action``), turns the errors duro raises on purpose
into one line on stderr (``CliError``, exit 1), and prints JSON with ``echo_json`` or tables
with ``echo_rich``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.console import Console, RenderableType

from duro import _cli_render as render
from duro.client import DEFAULT_DB, Client
from duro.errors import DuroError

T = TypeVar("T")

EXIT_FAILURE = 1
"""The request reached duro and failed (unknown workflow, run failed, bad JSON...)."""
EXIT_USAGE = 2
"""The command itself is wrong (click's own usage errors, an unloadable worker target)."""
EXIT_INTERRUPTED = 130
"""Interrupted by Ctrl-C, as shells report it."""


class CliError(click.ClickException):
    """An expected failure: one line on stderr and exit code 1, never a traceback."""

    exit_code = EXIT_FAILURE


class TargetError(CliError):
    """The worker's TARGET cannot be loaded or registers nothing: a usage error (exit 2)."""

    exit_code = EXIT_USAGE


class Interrupted(CliError):
    """Ctrl-C while a command waited."""

    exit_code = EXIT_INTERRUPTED


# -- shared options and plumbing ------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Where a command's client connects: the ``--db`` URL and the ``--namespace``."""

    db: str
    namespace: str


def connection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--db`` and ``--namespace`` and pass them on as one ``conn: Connection``.

    On every leaf command rather than on the group, so that options can follow the command
    (``duro workflow list --db ...``), where people type them.
    """

    @click.option(
        "--db",
        envvar="DURO_DB",
        default=DEFAULT_DB,
        show_default=True,
        metavar="URL",
        help="Database URL (env DURO_DB): sqlite:///path/to/duro.db or postgresql://user@host/db.",
    )
    @click.option("--namespace", default="default", show_default=True, help="Namespace.")
    @functools.wraps(fn)
    def wrapper(*args: Any, db: str, namespace: str, **kwargs: Any) -> Any:
        return fn(*args, conn=Connection(db, namespace), **kwargs)

    return wrapper


MAX_SECONDS = 100 * 365 * 86400.0
"""The longest duration an option takes (a century): longer is surely a mistake, and would
overflow ``timedelta`` eventually."""

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (pipeable).")
run_id_option = click.option("--run-id", help="A specific run (default: the latest run).")
inputs_option = click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="JSON",
    help="One argument as JSON (repeat for more), e.g. --input '\"text\"' --input 3.",
)


async def connect(conn: Connection) -> Client:
    try:
        return await Client.connect(conn.db, namespace=conn.namespace)
    except (ValueError, OSError, DuroError) as e:
        raise CliError(f"cannot open database {redacted(conn.db)!r}: {e}") from e


def redacted(url: str) -> str:
    """``postgresql://app:secret@db/duro`` -> ``postgresql://app:***@db/duro``.

    Database URLs end up in terminals and logs (the worker's banner, error messages).
    """
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{slash}{path}"


def run_action(conn: Connection, action: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, await ``action(client)``, close; turn expected errors into ``CliError``.

    ``DuroError`` and ``TimeoutError`` are the errors duro raises on purpose; anything else is
    a bug and keeps its traceback.
    """

    async def main() -> T:
        client = await connect(conn)
        try:
            return await action(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except (DuroError, TimeoutError) as e:
        raise CliError(str(e)) from e
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None


def _no_constant(name: str) -> Any:
    raise CliError(f"{name} is not a JSON number: use a finite number or a string")


def parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise CliError(
            f"{option} {text!r} is not valid JSON ({e.msg}); "
            f"strings need JSON quotes, e.g. {option} '\"text\"'"
        ) from None
    except CliError as e:
        raise CliError(f"{option} {text!r}: {e}") from None


def parse_args(inputs: tuple[str, ...], args_json: str | None = None) -> list[Any]:
    """The call's arguments: one JSON value per ``--input``, or one JSON list in ``--args``."""
    if args_json is not None:
        if inputs:
            raise click.UsageError("give the arguments with --input or with --args, not both")
        value = parse_json(args_json, "--args")
        if not isinstance(value, list):
            raise CliError(f"--args must be a JSON list, got {render.compact(value)}")
        return value
    return [parse_json(text, "--input") for text in inputs]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


PIPE_WIDTH = 160
"""Width of tables written to a pipe or file (no terminal to ask): wide enough that a row
stays one line for ``grep``, unless ``$COLUMNS`` says otherwise."""


def echo_rich(renderable: RenderableType) -> None:
    # A new console each time: it writes to whatever sys.stdout is now (CliRunner swaps it), and
    # rich drops colours by itself when stdout is not a terminal.
    console = Console(highlight=False)
    if console.is_terminal:
        console.print(renderable)
        return
    if "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    with console.capture() as captured:
        console.print(renderable)
    # Tables pad every cell to its column's width; trailing blanks only get in a pipe's way.
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))
