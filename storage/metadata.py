"""Typed document metadata: the ``meta__<key>`` columns, their schema evolution, and ``--where`` filters.

Every scalar metadata key with a plain name (``year``, ``source``, ``lang``) gets a typed column,
``meta__<key>`` (bool, int64, float64 or string), on the documents table *and* on every row that search
ranks: each view row (chunks, titles, synthetic queries) and each expanded row carry their document's
values. A filter is then a prefilter on the very table a query searches, one Lance query with no join and
no list of document ids, so the k hits asked for come back whenever k documents match (see
:func:`compile_where`). The ``metadata`` JSON column still holds everything, nested values included; keys
whose values are lists or objects, or whose names are not plain, are kept there but cannot be filtered on.

Schema evolution: a later ingest bringing a new key adds its column (null for the documents stored before)
to each table it writes; a key's type is fixed by its first values, and a record whose value has another
type is refused before anything is written, naming the record and the fix (an integer where the column
holds floats is stored as a float). A key no stored document has any more loses its column at the end of
the ingest that removed it, so the filterable keys are those some document has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lancedb
import pyarrow as pa

from storage.types import BadInputError, Document, Problem

PREFIX = "meta__"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAMES = {pa.bool_(): "bool", pa.int64(): "int", pa.float64(): "float", pa.string(): "text"}
_ARROW = {"boolean": "bool", "int64": "int", "float64": "float", "utf8": "text"}  # as DataFusion names them

Fields = dict[str, pa.DataType]  # filterable key -> its column's type


def column(key: str) -> str:
    """The column holding metadata key ``key``."""
    return PREFIX + key


def stored_fields(schema: pa.Schema) -> Fields:
    """The filterable keys a table's schema holds, with their types, by key."""
    return {f.name[len(PREFIX) :]: f.type for f in schema if f.name.startswith(PREFIX)}


def describe(fields: Fields) -> str:
    """``year (int), source (text)``: the filterable keys as error messages list them."""
    return ", ".join(f"{k} ({_NAMES.get(t, str(t))})" for k, t in sorted(fields.items())) or "none"


def _type_of(value: Any) -> pa.DataType | None:
    """The column type a JSON value gets; ``None`` for lists and objects (kept in JSON only)."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    return None


def _fits(value_type: pa.DataType, column_type: pa.DataType) -> bool:
    return value_type == column_type or (value_type == pa.int64() and column_type == pa.float64())


def infer_fields(documents: Iterable[Document], stored: Fields) -> Fields:
    """The fields to write ``documents`` with: ``stored``, plus each new plain key with a scalar value.

    A new key's type is that of its first value (an int key seen with a float becomes float). Values of a
    key that are lists or objects never make it filterable.

    Raises:
        BadInputError: a value's type differs from its key's column (stored, or set by an earlier record);
            one problem per record, naming the key, both types and the fix; nothing is written.
    """
    fields: Fields = dict(stored)
    first: dict[str, str] = {}  # key -> the record that fixed its type in this source
    nested: set[str] = set()
    problems: list[Problem] = []
    documents = list(documents)
    for doc in documents:  # first pass: new keys' types; ints widen to float within one source
        for key, value in doc.metadata.items():
            kind = _type_of(value)
            if not _KEY.match(key) or key in stored:
                continue
            if kind is None:
                nested.add(key)
            elif key not in fields:
                fields[key], first[key] = kind, doc.location or doc.doc_id
            elif {fields[key], kind} == {pa.int64(), pa.float64()}:
                fields[key] = pa.float64()
    for key in nested:
        fields.pop(key, None)
    for doc in documents:
        for key, value in doc.metadata.items():
            kind = _type_of(value)
            if key not in fields or value is None or (kind is not None and _fits(kind, fields[key])):
                continue
            where = "is stored as" if key in stored else f"was given by {first[key]} as"
            problems.append(
                Problem(
                    doc.location or doc.doc_id,
                    f"metadata key {key!r} is {_NAMES.get(kind, 'a list or object')} here ({value!r:.40}) "
                    f"but {where} {_NAMES[fields[key]]}",
                    f"give {key!r} {_NAMES[fields[key]]} values in every record, or rename the key in "
                    "this record (a corpus keeps a key's type; `zsr rm corpus` and a fresh ingest reset it)",
                    doc.doc_id,
                )
            )
    if problems:
        raise BadInputError(problems)
    return fields


def settled_fields(metadata: Iterable[Mapping[str, Any]]) -> tuple[Fields, list[str]]:
    """The fields stored metadata gives, without refusing any: keys whose values disagree are left out.

    For migrating stored documents (nothing can be refused there). Returns the fields and the keys left out
    (in the JSON column only; a later ingest whose values agree makes them filterable).
    """
    seen: dict[str, set[pa.DataType | None]] = {}
    for values in metadata:
        for key, value in values.items():
            if _KEY.match(key) and value is not None:
                seen.setdefault(key, set()).add(_type_of(value))
    fields: Fields = {}
    for key, kinds in seen.items():
        if kinds == {pa.int64(), pa.float64()}:
            fields[key] = pa.float64()
        elif len(kinds) == 1 and None not in kinds:
            fields[key] = kinds.pop()  # type: ignore[assignment]
    mixed = sorted(k for k, kinds in seen.items() if k not in fields and kinds != {None})
    return fields, mixed


def with_metadata(rows: pa.Table, metadata: Sequence[Mapping[str, Any]], fields: Fields) -> pa.Table:
    """``rows`` with one ``meta__<key>`` column per field, row i taking its values from ``metadata[i]``."""
    for key, kind in sorted(fields.items()):
        values = [m.get(key) for m in metadata]
        values = [v if _type_of(v) is not None and _fits(_type_of(v), kind) else None for v in values]
        rows = rows.append_column(pa.field(column(key), kind), pa.array(values, kind))
    return rows


def add_columns(table: lancedb.table.Table, fields: Fields) -> bool:
    """Add to ``table`` the columns of ``fields`` it lacks, null for its rows (one commit; data kept).

    Returns whether any was added (nothing is written when none is missing).
    """
    have = stored_fields(table.schema)
    new = [pa.field(column(k), t) for k, t in sorted(fields.items()) if k not in have]
    if new:
        table.add_columns(pa.schema(new))
    return bool(new)


def drop_columns(table: lancedb.table.Table, keys: Sequence[str]) -> bool:
    """Drop the columns of ``keys`` that ``table`` has (one commit, if any); whether any was dropped."""
    present = [column(k) for k in keys if column(k) in table.schema.names]
    if present:
        table.drop_columns(present)
    return bool(present)


def conform(table: lancedb.table.Table, rows: pa.Table) -> pa.Table:
    """``rows`` with a null column for each metadata column of ``table`` they lack, ready to merge into it.

    Writers add new columns first (:func:`add_columns`, a commit of its own); any that ``rows`` still bring
    are added here, so a write never fails on a column.
    """
    add_columns(table, stored_fields(rows.schema))
    for key, kind in stored_fields(table.schema).items():
        if column(key) not in rows.schema.names:
            rows = rows.append_column(pa.field(column(key), kind), pa.nulls(rows.num_rows, kind))
    return rows


class FilterError(ValueError):
    """A ``--where`` filter that cannot run: the message names the bad part and the filterable keys."""


_TOKEN = re.compile(
    r"""\s+|(?P<string>'(?:[^']|'')*')|(?P<quoted>"(?:[^"]|"")*"|`[^`]*`)"""
    r"""|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"""
    r"""|(?P<op><=|>=|<>|!=|=|<|>|\(|\)|,|\+|-|\*|/|%)"""
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "like", "ilike", "between", "true", "false"}
FUNCTIONS = {
    "lower", "upper", "length", "char_length", "starts_with", "ends_with", "regexp_like", "regexp_match",
    "abs", "round", "floor", "ceil", "coalesce", "strpos", "substr",
}  # fmt: skip


def rewrite_where(where: str, fields: Fields) -> str:
    """The user's filter over metadata keys as a filter over their ``meta__`` columns.

    The filter is tokenised and rebuilt: string and number literals, operators, the keywords in
    ``_KEYWORDS`` and the functions in :data:`FUNCTIONS` pass through; every other name must be a
    filterable key and becomes its quoted column. So no filter can name another column (``vector``,
    ``doc_id``), a table or a subquery (``SELECT`` is no key), and comments and ``;`` do not tokenise.

    Raises:
        FilterError: an unknown key or function, or a character no filter holds.
    """
    tokens: list[str] = []
    words = list(_TOKEN.finditer(where))
    position = 0
    for i, match in enumerate(words):
        if match.start() != position:
            break
        position = match.end()
        text, kind = match.group(), match.lastgroup
        if kind is None:
            continue  # whitespace
        if kind in ("word", "quoted"):
            name = text if kind == "word" else text[1:-1].replace('""', '"')
            following = next((w.group() for w in words[i + 1 :] if w.lastgroup), "")
            if kind == "word" and name.lower() in _KEYWORDS:
                text = name.upper()
            elif kind == "word" and following == "(":
                if name.lower() not in FUNCTIONS:
                    raise FilterError(
                        f"unknown function {name!r} in --where {where!r}; "
                        f"functions: {', '.join(sorted(FUNCTIONS))}"
                    )
                text = name.lower()
            elif name in fields:
                text = f"`{column(name)}`"
            else:
                close = [k for k in fields if k.lower() == name.lower()]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise FilterError(
                    f"unknown metadata key {name!r} in --where{hint}; filterable: {describe(fields)}"
                )
        tokens.append(text)
    if position != len(where) and where[position] in "'\"`":
        raise FilterError(
            f"--where {where!r}: the {where[position]} at character {position + 1} is never closed"
        )
    if position != len(where):
        raise FilterError(
            f"unexpected {where[position]!r} at character {position + 1} of --where {where!r} "
            "(strings take single quotes: source = 'nasa')"
        )
    depth = 0
    for token in tokens:  # balanced, so the filter stays one term when search ANDs it with its own
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth < 0:
            break
    if depth:
        raise FilterError(f"unbalanced parentheses in --where {where!r}")
    if not tokens:
        raise FilterError('--where is empty; give a condition such as "year >= 1990"')
    return " ".join(tokens)


def check_where(table: lancedb.table.Table, where: str, compiled: str, fields: Fields) -> None:
    """Plan ``compiled`` against ``table`` (nothing is read) and turn Lance's complaint into a clear one.

    Raises:
        FilterError: a syntax error, a value of the wrong type for its key, or a condition that is not
            true or false; the message quotes the filter and lists the filterable keys with their types.
    """
    try:
        table.to_lance().scanner(filter=compiled, columns=[], with_row_id=True, limit=1).explain_plan()
    except (ValueError, OSError) as error:
        raise FilterError(_explain(str(error), where, fields)) from None


def _explain(message: str, where: str, fields: Fields) -> str:
    message = message.replace(PREFIX, "").replace("`", "")
    literal = re.search(
        r"Received literal (\w+)\((.*?)\) and could not convert to literal of type .(\w+).", message
    )
    if literal:
        given, wanted = (_ARROW.get(g.lower(), g.lower()) for g in (literal.group(1), literal.group(3)))
        return (
            f"type mismatch in --where {where!r}: {literal.group(2)} is {given}, compared with a key of type "
            f"{wanted}; filterable: {describe(fields)}"
        )
    parsed = re.search(r"sql parser error: (.*?)\)?(?:, /|$)", message, re.S)
    if parsed:
        why = f"syntax error ({parsed.group(1)})"
    elif "does not return a boolean" in message:
        why = "it is not a condition (true or false), e.g. year >= 1990"
    elif "Schema error" in message:  # a keyword where a value belongs: Lance read it as a column name
        why = "the condition is incomplete, e.g. year >= 1990 AND NOT lang = 'en'"
    else:  # DataFusion's first sentence (operand and argument types), without its source locations
        first = message.split(", /")[0].split("\n")[0].split(". No function")[0]
        why = re.sub(r"^(Invalid user input: |Invalid input, )?(Error during planning: )?", "", first)
    return f"bad --where {where!r}: {why}; filterable: {describe(fields)}"
