"""PostgreSQL names as the spec writes them, and the ASCII names stagecopy derives from them.

* :func:`parse_qualified_name` and :func:`parse_column_name` follow PostgreSQL's own rules:
  unquoted names fold to lower case (ASCII letters only, as the server does for UTF-8),
  double-quoted names are exact, and names longer than 63 bytes are clipped at a character
  boundary exactly as the server clips them.
* :func:`staging_table_name` makes short, unique, ASCII names for staging tables.
* :func:`asset_name_for` derives a readable, stable Dagster name (``^[A-Za-z0-9_]+$``) from any
  table name, Korean included, without letting two tables collide.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass

from anyascii import anyascii
from psycopg import sql

from stagecopy_dagster.errors import SpecError

#: PostgreSQL keeps at most NAMEDATALEN - 1 bytes of an identifier.
MAX_IDENTIFIER_BYTES = 63
#: Every staging table stagecopy creates starts with this prefix (the clean-up looks for it).
STAGING_PREFIX = "_stagecopy_"
_STAGING_RE = re.compile(r"^_stagecopy_(\d{10})_[0-9a-f]{12}$")
_UNQUOTED_START = re.compile(r"[A-Za-z_\u0080-\U0010FFFF]")
_UNQUOTED_REST = re.compile(r"[A-Za-z0-9_$\u0080-\U0010FFFF]")
_DAGSTER_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True, order=True)
class QualifiedName:
    """A schema-qualified table name, exactly as PostgreSQL stores it."""

    schema: str
    name: str

    @property
    def identifier(self) -> sql.Identifier:
        """The name as a quoted, schema-qualified SQL identifier."""
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{quote_if_needed(self.schema)}.{quote_if_needed(self.name)}"


def clip_identifier(name: str) -> str:
    """Clip `name` to 63 UTF-8 bytes at a character boundary, as PostgreSQL does."""
    raw = name.encode("utf-8")
    if len(raw) <= MAX_IDENTIFIER_BYTES:
        return name
    return raw[:MAX_IDENTIFIER_BYTES].decode("utf-8", errors="ignore")


def quote_if_needed(name: str) -> str:
    """Render one identifier the way a person would write it in SQL (for messages and docs)."""
    plain = (
        bool(name)
        and _UNQUOTED_START.match(name[0]) is not None
        and all(_UNQUOTED_REST.match(ch) for ch in name)
        and name == _fold(name)
    )
    return name if plain else '"' + name.replace('"', '""') + '"'


def _fold(name: str) -> str:
    # PostgreSQL folds only ASCII letters in multi-byte encodings (downcase_identifier).
    return "".join(ch.lower() if "A" <= ch <= "Z" else ch for ch in name)


def split_identifier_path(text: str, *, what: str) -> list[str]:
    """Split `a.b`, `"A"."b c"` or `a` into PostgreSQL identifiers, applying folding rules."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise SpecError(f"{what} {text!r}: expected a name")
        read = _read_quoted if text[i] == '"' else _read_unquoted
        part, i = read(text, i, what=what)
        parts.append(clip_identifier(part))
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return parts
        if text[i] != ".":
            raise SpecError(
                f"{what} {text!r}: unexpected {text[i]!r} "
                '(quote names with spaces or punctuation: "My Table")'
            )
        i += 1


def _read_quoted(text: str, start: int, *, what: str) -> tuple[str, int]:
    """The name in the double quotes at `start` (`""` is a quote), and the index after them."""
    j, buf, n = start + 1, [], len(text)
    while True:
        if j >= n:
            raise SpecError(f"{what} {text!r}: unterminated quoted name")
        if text[j] == '"':
            if j + 1 < n and text[j + 1] == '"':
                buf.append('"')
                j += 2
                continue
            break
        buf.append(text[j])
        j += 1
    part = "".join(buf)
    if not part:
        raise SpecError(f"{what} {text!r}: a quoted name cannot be empty")
    return part, j + 1


def _read_unquoted(text: str, start: int, *, what: str) -> tuple[str, int]:
    """The folded unquoted name at `start`, and the index after it."""
    if not _UNQUOTED_START.match(text[start]):
        raise SpecError(
            f"{what} {text!r}: unquoted names start with a letter or '_' "
            '(write "..." for any other name)'
        )
    j, n = start, len(text)
    while j < n and _UNQUOTED_REST.match(text[j]):
        j += 1
    return _fold(text[start:j]), j


def parse_qualified_name(text: str, *, default_schema: str = "public") -> QualifiedName:
    """Parse `schema.table` (or `table`, in `default_schema`) following PostgreSQL's rules.

    Example:
        >>> parse_qualified_name('Raw_Data."Order Items"')
        QualifiedName(schema='raw_data', name='Order Items')
    """
    parts = split_identifier_path(text, what="table name")
    match parts:
        case [name]:
            return QualifiedName(default_schema, name)
        case [schema, name]:
            return QualifiedName(schema, name)
    raise SpecError(f"table name {text!r}: expected schema.table, got {len(parts)} parts")


def parse_column_name(text: str) -> str:
    """Parse one column name following PostgreSQL's rules (`Code` -> `code`, `"Code"` exact)."""
    parts = split_identifier_path(text, what="column name")
    if len(parts) != 1:
        raise SpecError(f"column name {text!r}: expected one name, not a dotted path")
    return parts[0]


def staging_table_name(now: float | None = None) -> str:
    """A fresh staging table name: ASCII, 34 bytes, unique per call, with its creation time.

    The Unix time in the name lets the clean-up find staging tables older than any run.
    """
    stamp = int(time.time() if now is None else now)
    return f"{STAGING_PREFIX}{stamp:010d}_{uuid.uuid4().hex[:12]}"


def staging_created_at(name: str) -> int | None:
    """The Unix time encoded in a staging table's name, or None for any other name."""
    match = _STAGING_RE.match(name)
    return int(match.group(1)) if match else None


# --- Dagster names ---------------------------------------------------------------------------

_LEADS = [
    "g",
    "kk",
    "n",
    "d",
    "tt",
    "r",
    "m",
    "b",
    "pp",
    "s",
    "ss",
    "",
    "j",
    "jj",
    "ch",
    "k",
    "t",
    "p",
    "h",
]
_VOWELS = [
    "a",
    "ae",
    "ya",
    "yae",
    "eo",
    "e",
    "yeo",
    "ye",
    "o",
    "wa",
    "wae",
    "oe",
    "yo",
    "u",
    "wo",
    "we",
    "wi",
    "yu",
    "eu",
    "ui",
    "i",
]
_TAILS = [
    "",
    "k",
    "k",
    "k",
    "n",
    "n",
    "n",
    "t",
    "l",
    "k",
    "m",
    "l",
    "l",
    "l",
    "p",
    "l",
    "m",
    "p",
    "p",
    "t",
    "t",
    "ng",
    "t",
    "t",
    "k",
    "t",
    "p",
    "t",
]


#: Unicode lays the Hangul syllables out from U+AC00 as lead x vowel x tail (19 x 21 x 28).
_HANGUL_FIRST = 0xAC00
_SYLLABLES_PER_LEAD = len(_VOWELS) * len(_TAILS)
_HANGUL_SYLLABLES = len(_LEADS) * _SYLLABLES_PER_LEAD


def romanize(text: str) -> str:
    """Transliterate `text` to ASCII for a readable name.

    Hangul syllables get stagecopy's own Revised Romanization (simplified), which earlier
    releases used and asset keys keep; every other script goes through `anyascii`, a maintained
    transliteration table (`заказы` -> `zakazy`, `注文明細` -> `ZhuWenMingXi`).

    Example:
        >>> romanize("일별시세 заказы")
        'ilbyeolsise zakazy'
    """
    out = []
    for ch in text:
        code = ord(ch) - _HANGUL_FIRST
        if 0 <= code < _HANGUL_SYLLABLES:
            lead, rest = divmod(code, _SYLLABLES_PER_LEAD)
            vowel, tail = divmod(rest, len(_TAILS))
            out.append(_LEADS[lead] + _VOWELS[vowel] + _TAILS[tail])
        elif ch.isascii():
            out.append(ch)
        else:
            out.append(anyascii(ch))
    return "".join(out)


def _slug(text: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", romanize(text)).strip("_")
    return words or "t"


def asset_name_for(table: QualifiedName) -> str:
    """A Dagster asset name for `table`: `schema__table`, readable, stable and collision-free.

    Names that are already plain ASCII words keep their spelling (case included). Any name that
    had to be transliterated or cleaned gets a short hash of the exact name, so
    `"Order Items"` and `order_items` (two tables) never share an asset name.

    Example:
        >>> asset_name_for(QualifiedName("raw_data", "인포맥스종목마스터"))
        'raw_data__inpomaekseujongmokmaseuteo_bb87fa'
    """
    pieces = [table.schema, table.name]
    lossless = all(_DAGSTER_NAME.match(p) for p in pieces) and table.schema != "public"
    if table.schema == "public" and _DAGSTER_NAME.match(table.name):
        return table.name
    base = "__".join(_slug(p) for p in pieces)
    if lossless:
        return base
    digest = hashlib.sha1(f"{table.schema}\x00{table.name}".encode()).hexdigest()[:6]
    return f"{base[:48]}_{digest}"


def is_valid_dagster_name(name: str) -> bool:
    """Whether `name` satisfies Dagster's ``^[A-Za-z0-9_]+$``."""
    return bool(_DAGSTER_NAME.match(name))
