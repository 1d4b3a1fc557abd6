"""List queries: filter conditions as SQL, keyset pages and counts over one resource table.

A condition is a small tree the domain builds from a filter; here it becomes SQL. A
value inside a repeated message lives in a child table, so a comparison on it holds
when some child row satisfies it (`EXISTS`), and `!=` when none equals the value.
Every comparison is two-valued (an unset value never equals, never differs from
nothing), so NOT means what it says.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, not_, or_, select, true
from sqlalchemy.orm import Session

from customer_management.store.models import CHILDREN, ROWS, Base, ResourceRow


@dataclass(frozen=True)
class Column:
    """Where a filterable value is stored: a column of the resource row, or of `child`."""

    name: str
    child: type[Base] | None = None
    nullable: bool = False


@dataclass(frozen=True)
class Compare:
    column: Column
    op: str
    """One of = != < <= > >=."""
    value: Any


@dataclass(frozen=True)
class Present:
    """The field is set (a child row has it set)."""

    column: Column


@dataclass(frozen=True)
class All:
    terms: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    terms: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    term: Condition


Condition = Compare | Present | All | AnyOf | Not


@dataclass(frozen=True)
class OrderTerm:
    column: str
    descending: bool
    nullable: bool = False


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def where(kind: str, condition: Condition) -> ColumnElement[bool]:
    model = ROWS[kind]
    owners = {table: owner for table, owner in CHILDREN[kind]}

    def sql(node: Condition) -> ColumnElement[bool]:
        if isinstance(node, All):
            return and_(true(), *(sql(term) for term in node.terms))
        if isinstance(node, AnyOf):
            return or_(false(), *(sql(term) for term in node.terms))
        if isinstance(node, Not):
            return not_(sql(node.term))
        column = node.column
        if column.child is None:
            return _test(getattr(model, column.name), node, column.nullable)
        child = column.child
        correlated = getattr(child, owners[child]) == model.id

        def some(test: ColumnElement[bool]) -> ColumnElement[bool]:
            return exists(select(1).select_from(child).where(correlated, test))

        value = getattr(child, column.name)
        if isinstance(node, Compare) and node.op == "!=":
            return not_(some(value == node.value))
        return some(_test(value, node, column.nullable))

    return sql(condition)


def _test(value: Any, node: Compare | Present, nullable: bool) -> ColumnElement[bool]:
    if isinstance(node, Present):
        test = value.is_not(None)
        return and_(test, value != "") if value.type.python_type is str else test
    if not nullable:
        return _OPS[node.op](value, node.value)  # type: ignore[no-any-return]
    if node.op == "!=":
        return or_(value.is_(None), value != node.value)
    return and_(value.is_not(None), _OPS[node.op](value, node.value))


def page(
    session: Session,
    kind: str,
    *,
    condition: Condition | None,
    order: Sequence[OrderTerm],
    after: Sequence[Any] | None,
    limit: int,
    offset: int = 0,
) -> list[ResourceRow]:
    """One page in `order` (then newest first), starting after the keyset `after` and
    skipping `offset` rows (the REST binding's paging)."""
    return list(session.scalars(page_query(kind, condition, order, after, limit, offset)))


def explain(
    session: Session, kind: str, condition: Condition | None, order: Sequence[OrderTerm]
) -> str:
    """The database's plan for a first page: which indexes a filter and order walk."""
    statement = page_query(kind, condition, order, None, 50)
    dialect = session.get_bind().dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
    rows = session.connection().exec_driver_sql(prefix + sql)
    return "\n".join(" | ".join(str(v) for v in row) for row in rows)


def page_query(
    kind: str,
    condition: Condition | None,
    order: Sequence[OrderTerm],
    after: Sequence[Any] | None,
    limit: int,
    offset: int = 0,
) -> Select[ResourceRow]:
    """Unset values sort after every value in ascending order and before in descending
    order, as a B-tree index walked either way has them."""
    model = ROWS[kind]
    terms = [*order, OrderTerm("pk", True)]
    columns = [getattr(model, term.column) for term in terms]
    query = select(model)
    if condition is not None:
        query = query.where(where(kind, condition))
    if after is not None:
        query = query.where(_after(columns, terms, after))
    query = query.order_by(
        *(
            (c.desc().nulls_first() if t.descending else c.asc().nulls_last())
            if t.nullable
            else (c.desc() if t.descending else c.asc())
            for c, t in zip(columns, terms, strict=True)
        )
    )
    return query.limit(limit).offset(offset or None)


def count(session: Session, kind: str, condition: Condition | None) -> int:
    model = ROWS[kind]
    query = select(func.count()).select_from(model)
    if condition is not None:
        query = query.where(where(kind, condition))
    return int(session.scalar(query) or 0)


def _after(
    columns: Sequence[Any], terms: Sequence[OrderTerm], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly after `values` in the lexicographic order of `columns`."""
    alternatives = []
    for i, (column, term) in enumerate(zip(columns, terms, strict=True)):
        ties = [_tie(columns[j], values[j]) for j in range(i)]
        alternatives.append(and_(*ties, _beyond(column, term, values[i])))
    return or_(*alternatives)


def _tie(column: Any, value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value  # type: ignore[no-any-return]


def _beyond(column: Any, term: OrderTerm, value: Any) -> ColumnElement[bool]:
    if term.descending:  # unset values first
        if value is None:
            return column.is_not(None)  # type: ignore[no-any-return]
        return column < value  # type: ignore[no-any-return]
    if value is None:  # unset values last: nothing comes after them
        return false()
    beyond = column > value
    return or_(beyond, column.is_(None)) if term.nullable else beyond
