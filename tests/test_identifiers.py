from __future__ import annotations

import pytest

from pysync.postgres.identifiers import (
    IdentifierError,
    parse_column_list,
    parse_identifier,
    parse_relation,
    quote_identifier,
)


@pytest.mark.parametrize(
    ("ident", "name"),
    [
        ("FooBar", "foobar"),
        ('"FooBar"', "FooBar"),
        ('" "', " "),
        ('"Foo""Bar"', 'Foo"Bar'),
        ("_x$1", "_x$1"),
        ("ÉtÉ", "ÉtÉ"),  # only ASCII letters are folded
        ("café", "café"),
        ("e\u0301", "e\u0301"),  # combining mark after the first character
        ("名前", "名前"),
        ('"a.b"', "a.b"),
        ('"with,comma"', "with,comma"),
        ("a" * 63, "a" * 63),
    ],
)
def test_valid_identifiers(ident: str, name: str) -> None:
    assert parse_identifier(ident) == name


@pytest.mark.parametrize(
    ("ident", "message"),
    [
        ('Foo"Bar"', 'Invalid unquoted identifier contains special characters: Foo"Bar"'),
        (" ", "Invalid unquoted identifier contains special characters:  "),
        ("foob@r", "Invalid unquoted identifier contains special characters: foob@r"),
        ("1abc", "Invalid unquoted identifier contains special characters: 1abc"),
        ("$abc", "Invalid unquoted identifier contains special characters: $abc"),
        ("\u0301e", "Invalid unquoted identifier contains special characters: \u0301e"),
        ("a١", "Invalid unquoted identifier contains special characters: a١"),  # non-ASCII digit
        ("foo\n", "Invalid unquoted identifier contains special characters: foo\n"),
        ("a.b", "Invalid unquoted identifier contains special characters: a.b"),
        ('"Foo"Bar"', 'Invalid identifier with unescaped quote: Foo"Bar'),
        ('""', "Invalid zero-length delimited identifier"),
        ('"', "Invalid zero-length delimited identifier"),
        ("", "Invalid zero-length delimited identifier"),
        ("a" * 64, "Identifier is too long (max length is 63)"),
        ('"' + "A" * 64 + '"', "Identifier is too long (max length is 63)"),
    ],
)
def test_invalid_identifiers(ident: str, message: str) -> None:
    with pytest.raises(IdentifierError) as info:
        parse_identifier(ident)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_length_is_checked_after_unescaping() -> None:
    assert parse_identifier('"' + '""' * 63 + '"') == '"' * 63


@pytest.mark.parametrize(
    ("ident", "relation"),
    [
        ("todos", ("public", "todos")),
        ("Todos", ("public", "todos")),
        ("public.todos", ("public", "todos")),
        ('"My Table"', ("public", "My Table")),
        ('app."Todos"', ("app", "Todos")),
        ('"foo"."bar"', ("foo", "bar")),
        ('"foo".bar', ("foo", "bar")),
        ('"a.b"', ("public", "a.b")),
        ('"foo.woah"."bar"', ("foo.woah", "bar")),
        ('"a""."."b"', ('a".', "b")),
    ],
)
def test_parse_relation(ident: str, relation: tuple[str, str]) -> None:
    assert parse_relation(ident) == relation


@pytest.mark.parametrize(
    ("ident", "message"),
    [
        ("foo.bar.baz", "Invalid relation identifier, too many delimiters: foo.bar.baz"),
        ('"a".b."c"', 'Invalid relation identifier, too many delimiters: "a".b."c"'),
        ('"foo"."bar', 'Invalid unquoted identifier contains special characters: "bar'),
        ("foo.", "Invalid zero-length delimited identifier"),
        ("", "Invalid zero-length delimited identifier"),
        ("foo.b@r", "Invalid unquoted identifier contains special characters: b@r"),
    ],
)
def test_invalid_relations(ident: str, message: str) -> None:
    with pytest.raises(IdentifierError) as info:
        parse_relation(ident)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("columns", "names"),
    [
        ("id", ["id"]),
        ("id,name", ["id", "name"]),
        ('"id","title"', ["id", "title"]),  # what the TS client sends
        ('"PoT@To",PoTaTo', ["PoT@To", "potato"]),
        ('"PoTaTo,sunday",foo', ["PoTaTo,sunday", "foo"]),
        ('"fo""o",bar', ['fo"o', "bar"]),
        ("b,a", ["b", "a"]),
    ],
)
def test_parse_column_list(columns: str, names: list[str]) -> None:
    assert parse_column_list(columns) == names


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ("", "Invalid zero-length delimited identifier"),
        ("foo,", "Invalid zero-length delimited identifier"),
        ('"id,"name"', 'Invalid unquoted identifier contains special characters: "id'),
        ("id, name", "Invalid unquoted identifier contains special characters:  name"),
    ],
)
def test_invalid_column_lists(columns: str, message: str) -> None:
    with pytest.raises(IdentifierError) as info:
        parse_column_list(columns)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["todos", "My Table", 'a"b', '""', "a.b", "x,y"])
def test_quote_identifier_round_trips(name: str) -> None:
    assert parse_identifier(quote_identifier(name)) == name


def test_quote_identifier() -> None:
    assert quote_identifier('a"b') == '"a""b"'
