"""List filters: the subset of Google AIP-160 docs/api.md documents, parsed with lark.

    expression  := factor { AND factor }
    factor      := term { OR term }           (OR binds tighter than AND, as in AIP-160)
    term        := [ NOT | - ] ( restriction | "(" expression ")" )
    restriction := field ( = | != | < | <= | > | >= | : ) value
    value       := "string" | 'string' | bare word, number, true, false or RFC 3339 time

A field is a TMF JSON path (`contactMedium.medium.emailAddress`) or its proto spelling.
A comparison on a field inside a repeated message holds when some element satisfies it,
and `!=` when no element equals the value. `field:value` is `field = value`, and
`field:*` means the field is set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from customer_management.domain.errors import FieldViolation, InvalidArgument
from customer_management.domain.validation import MONEY_DECIMALS, Violations, money
from customer_management.store.mapping import Field
from customer_management.store.query import All, AnyOf, Compare, Condition, Not, Present

MAX_FILTER_LENGTH = 2000
MAX_RESTRICTIONS = 50
MAX_DEPTH = 16
"""Nesting of parentheses and NOT; deeper filters are refused, not recursed into."""
MAX_LITERAL = 4096
INT32 = (-(2**31), 2**31 - 1)
_CONTROL = re.compile(r"[\x00-\x1f]")
_ORDERED = ("<", "<=", ">", ">=")

_GRAMMAR = r"""
    start: expression?
    ?expression: factor (AND factor)*
    ?factor: term (OR term)*
    ?term: NOT simple -> negation
         | MINUS simple -> negation
         | simple
    ?simple: restriction
           | "(" expression ")"
    restriction: FIELD COMPARATOR (STRING | BARE)

    AND.3: /AND(?![\w.])/i
    OR.3: /OR(?![\w.])/i
    NOT.3: /NOT(?![\w.])/i
    MINUS: "-"
    FIELD: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/
    COMPARATOR: "<=" | ">=" | "!=" | "<" | ">" | "=" | ":"
    STRING: /"(?:[^"\\]|\\.)*"/ | /'(?:[^'\\]|\\.)*'/
    BARE: /[^\s"'()]+/

    %import common.WS
    %ignore WS
"""
_PARSER = Lark(_GRAMMAR, parser="lalr", lexer="contextual")
_EXPECTED = {
    "AND": "AND",
    "OR": "OR",
    "NOT": "NOT",
    "MINUS": "-",
    "FIELD": "a field",
    "COMPARATOR": "an operator (= != < <= > >= :)",
    "STRING": "a value",
    "BARE": "a value",
    "LPAR": "(",
    "RPAR": ")",
    "$END": "the end",
}


def invalid(description: str) -> InvalidArgument:
    return InvalidArgument(
        f"filter {description}", violations=[FieldViolation("filter", description)]
    )


def parse(text: str, fields: Mapping[str, Field], region: str = "") -> Condition | None:
    """The condition `text` states over `fields`; None for an empty filter. `region`:
    the country of national telephone numbers."""
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid(f"is longer than {MAX_FILTER_LENGTH} characters")
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as error:
        raise invalid(_syntax_problem(text, error)) from None
    if not tree.children:
        return None
    root = tree.children[0]
    _check_size(root)
    return _condition(root, fields, region)


def _syntax_problem(text: str, error: UnexpectedInput) -> str:
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    ):
        where, found = "at the end", "end of the filter"
    elif isinstance(error, UnexpectedCharacters):
        where, found = f"at column {error.column}", f"{error.char!r}"
    else:
        assert isinstance(error, UnexpectedToken)
        where, found = f"at column {error.column}", f"{str(error.token)!r}"
    names = getattr(error, "expected", None) or getattr(error, "allowed", None) or ()
    expected = sorted({_EXPECTED.get(name, name) for name in names})
    hint = f"; expected {', '.join(expected)}" if expected else ""
    return f"is not valid {where}: unexpected {found}{hint}"


def _check_size(root: Tree[Token] | Token) -> None:
    restrictions = 0
    stack: list[tuple[Tree[Token] | Token, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Tree):
            continue
        if depth > MAX_DEPTH:
            raise invalid(f"nests deeper than {MAX_DEPTH} levels")
        if node.data == "restriction":
            restrictions += 1
            if restrictions > MAX_RESTRICTIONS:
                raise invalid(f"has more than {MAX_RESTRICTIONS} comparisons")
        stack.extend((child, depth + 1) for child in node.children)


def _condition(node: Tree[Token] | Token, fields: Mapping[str, Field], region: str) -> Condition:
    assert isinstance(node, Tree)
    parts = [child for child in node.children if isinstance(child, Tree)]
    if node.data == "expression":
        return All(tuple(_condition(part, fields, region) for part in parts))
    if node.data == "factor":
        return AnyOf(tuple(_condition(part, fields, region) for part in parts))
    if node.data == "negation":
        return Not(_condition(parts[0], fields, region))
    name, comparator, value = (str(token) for token in node.children)
    return _restriction(name, comparator, value, fields, region)


def _restriction(
    name: str, comparator: str, text: str, fields: Mapping[str, Field], region: str
) -> Condition:
    field = fields.get(name)
    if field is None:
        known = ", ".join(sorted(n for n in fields if "_" not in n))
        raise invalid(f"names {name!r}, which is not a field it can use (use one of {known})")
    if comparator == ":" and text == "*":
        return Present(field.stored)
    op = "=" if comparator == ":" else comparator
    if op in _ORDERED and (field.text or field.value_type is bool):
        raise invalid(f"compares {name} with {op}; it only takes = != and :")
    return Compare(field.stored, op, _literal(name, field, text, region))


def _literal(name: str, field: Field, text: str, region: str) -> Any:
    if text[0] == '"':
        try:
            text = json.loads(text)
        except ValueError:
            raise invalid(f"has an invalid string literal {text}") from None
    elif text[0] == "'":
        text = text[1:-1].replace("\\'", "'").replace('\\"', '"')
    try:
        value = typed(field, text)
    except (ValueError, InvalidOperation, OverflowError):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise invalid(
            f"compares {name} with {shown!r}, which is not {_A[field.value_type]}"
        ) from None
    if field.key is not None:
        value = field.key(value, region)
        if value is None:
            raise invalid(f"compares {name} with {text!r}, which it can never equal")
    return value


_A = {
    str: "a string",
    int: "a 32-bit integer",
    bool: "true or false",
    Decimal: f"an amount of at most {MONEY_DECIMALS} decimals",
    datetime: "an RFC 3339 time with an offset",
}


def typed(field: Field, value: Any) -> Any:
    """`value` as the field's type, or ValueError: what filters and page tokens hold."""
    if field.value_type is str:
        if not isinstance(value, str) or len(value) > MAX_LITERAL or _CONTROL.search(value):
            raise ValueError(value)
        return value
    if field.value_type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(value)
    if field.value_type is int:
        number = int(value) if isinstance(value, str) else value
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(value)
        if not INT32[0] <= number <= INT32[1]:
            raise ValueError(value)
        return number
    if field.value_type is datetime:
        if not isinstance(value, str):
            raise ValueError(value)
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError(value)
        return moment.astimezone(UTC)
    if field.value_type is Decimal:
        if not isinstance(value, str):
            raise ValueError(value)
        exact = Decimal(value)
        amount = money(float(exact), "filter", Violations())
        if amount is None or amount != exact:
            raise ValueError(value)
        return amount
    raise ValueError(value)
