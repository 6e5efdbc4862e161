"""The visibility query language: find runs by type, status, ids and times.

Example: ``WorkflowType = 'Agent' AND Status = 'Running' AND StartTime > '2026-01-01'
AND CustomerId = 'c-42' ORDER BY StartTime DESC``. Names other than the built-in fields are
search attributes (``start_workflow(search_attributes=...)``,
``workflow.upsert_search_attributes``). Conditions combine with ``AND``, ``OR``, ``NOT`` and
parentheses; values are single-quoted strings (times as ISO 8601) or numbers. The parser
(lark, an LALR grammar) produces a small, store-neutral tree; each store turns it into SQL.

A bad query raises ``QuerySyntaxError`` naming the position and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import lark

from duro.errors import DuroError
from duro.history import RunStatus

__all__ = ["And", "Compare", "Not", "Or", "Query", "QuerySyntaxError", "parse_query"]

FIELDS = {
    "WorkflowType": "text",
    "WorkflowId": "text",
    "RunId": "text",
    "TaskQueue": "text",
    "Status": "status",
    "StartTime": "time",
    "CloseTime": "time",
}
"""Queryable fields and their kind (how a value is checked and converted)."""

_GRAMMAR = r"""
?start: query
query: expr? order?
order: "ORDER"i "BY"i FIELD direction?
direction: ASC | DESC
ASC: "ASC"i
DESC: "DESC"i
?expr: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> negate
         | atom
?atom: comparison
     | "(" expr ")"
comparison: FIELD OP value
?value: STRING -> string
      | NUMBER -> number
OP: "!=" | "<=" | ">=" | "=" | "<" | ">"
_AND: "AND"i
_OR: "OR"i
_NOT: "NOT"i
FIELD: /[A-Za-z][A-Za-z0-9]*/
STRING: /'([^'\\]|\\.)*'/
%import common.SIGNED_NUMBER -> NUMBER
%import common.WS
%ignore WS
"""


class QuerySyntaxError(DuroError, ValueError):
    """The query does not parse, or names an unknown field or a bad value."""


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Any
    """Converted: a RunStatus value string for Status, epoch seconds for times."""
    custom: bool = False
    """A search attribute (set at start or by ``workflow.upsert_search_attributes``)."""


@dataclass(frozen=True)
class And:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    part: Condition


Condition = Compare | And | Or | Not


@dataclass(frozen=True)
class Query:
    where: Condition | None = None
    order_by: str = "StartTime"
    descending: bool = True


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


def parse_query(text: str | None) -> Query:
    """Parse a visibility query; an empty query matches every run, newest first."""
    if text is None or not text.strip():
        return Query()
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as e:
        column = getattr(e, "column", "?")
        expected = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or [])
        hint = f"; expected one of {', '.join(expected)}" if expected else ""
        raise QuerySyntaxError(f"bad query at column {column}: {text!r}{hint}") from None
    where: Condition | None = None
    order, descending = "StartTime", True
    for child in tree.children:
        if isinstance(child, lark.Tree) and child.data == "order":
            order = _field(str(child.children[0]))
            if len(child.children) > 1:
                direction = child.children[1]
                assert isinstance(direction, lark.Tree)
                descending = str(direction.children[0]).upper() == "DESC"
            else:
                descending = False
        else:
            where = _condition(child)
    return Query(where=where, order_by=order, descending=descending)


def _field(name: str) -> str:
    for known in FIELDS:
        if known.lower() == name.lower():
            return known
    raise QuerySyntaxError(f"unknown field {name!r}; fields: {', '.join(FIELDS)}")


def _builtin(name: str) -> str | None:
    return next((known for known in FIELDS if known.lower() == name.lower()), None)


def _condition(node: Any) -> Condition:
    if not isinstance(node, lark.Tree):
        raise QuerySyntaxError(f"unexpected {node!r} in query")
    if node.data == "comparison":
        name, op, value = node.children
        builtin = _builtin(str(name))
        if builtin is None:  # a search attribute; the store checks that it exists
            assert isinstance(value, lark.Tree)
            raw = str(value.children[0])
            literal = raw[1:-1].replace("\\'", "'") if value.data == "string" else float(raw)
            return Compare(str(name), str(op), literal, custom=True)
        return _compare(builtin, str(op), value)
    if node.data == "and_expr":
        return And(tuple(_condition(c) for c in node.children))
    if node.data == "or_expr":
        return Or(tuple(_condition(c) for c in node.children))
    if node.data == "negate":
        return Not(_condition(node.children[0]))
    raise QuerySyntaxError(f"unexpected {node.data!r} in query")


def _compare(field: str, op: str, value_node: Any) -> Compare:
    assert isinstance(value_node, lark.Tree)
    raw = str(value_node.children[0])
    kind = FIELDS[field]
    if value_node.data == "string":
        value: Any = raw[1:-1].replace("\\'", "'")
    else:
        value = float(raw)
    if kind == "status":
        if op not in ("=", "!="):
            raise QuerySyntaxError(f"Status supports = and != only, not {op!r}")
        by_name = {s.value.lower(): s.value for s in RunStatus}
        if not isinstance(value, str) or value.lower() not in by_name:
            raise QuerySyntaxError(
                f"unknown status {value!r}; statuses: {', '.join(s.value for s in RunStatus)}"
            )
        value = by_name[value.lower()]
    elif kind == "time":
        value = _time(field, value)
    elif not isinstance(value, str):
        raise QuerySyntaxError(f"{field} compares with a quoted string, not {raw}")
    return Compare(field, op, value)


def _time(field: str, value: Any) -> float:
    if isinstance(value, float):
        return value
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise QuerySyntaxError(
            f"{field} needs an ISO 8601 time such as '2026-01-31' or '2026-01-31T12:00:00Z', "
            f"not {value!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
