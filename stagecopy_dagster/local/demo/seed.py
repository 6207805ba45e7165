"""Create, and later change, the demo source: what `replication.yaml` beside this file copies.

The source (`seed_source`) holds

* `raw_data.인포맥스종목마스터`: about 3,000 listed stocks with Korean names, KOSPI / KOSDAQ /
  KONEX (the spec copies only KOSPI and KOSDAQ: a `where` scope);
* `raw_data.일별시세`: daily prices, (종목코드, 거래일) key, `large_rows` rows ending on the last
  Friday before today, `updated_at` at 18:00 KST of each trading day (an incremental field);
* `"Sales"."Order Items"`: mixed-case names, notes full of tabs, newlines, quotes and
  backslashes, `text[]` tags and `jsonb` (exercises text and binary COPY and `sync`);
* `raw_data.공시목록`: disclosures whose `공시구분` is the enum type `raw_data.공시유형`.

The copier creates missing target tables with the source's column types, but not user-defined
types: a target table with an enum column needs the enum type to exist first, so
`seed_target` creates it. `touch_source` updates about 1% of each table's rows with a fresh
`updated_at`, inserts a few rows and deletes a few order items, so that the next run (or a
sensor) has something to copy.

All data is generated inside PostgreSQL with `generate_series`, in one transaction per call,
serialized by an advisory lock: 300,000 price rows take a few seconds.

Example:
    >>> seed_source("postgresql://postgres:pw@127.0.0.1:5432/stagecopy_source")  # doctest: +SKIP
    >>> seed_target("postgresql://postgres:pw@127.0.0.1:5432/stagecopy_target")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg
from psycopg import sql

from stagecopy_dagster import catalog
from stagecopy_dagster.errors import SchemaMismatchError
from stagecopy_dagster.identifiers import QualifiedName

__all__ = [
    "DEMO_SPEC",
    "DISCLOSURE_KIND",
    "DISCLOSURE_KINDS",
    "DISCLOSURES",
    "MASTER",
    "ORDER_ITEMS",
    "PRICES",
    "seed_source",
    "seed_target",
    "touch_source",
]

log = logging.getLogger(__name__)

#: The replication spec that copies every demo table.
DEMO_SPEC = Path(__file__).with_name("replication.yaml")

MASTER = QualifiedName("raw_data", "인포맥스종목마스터")
PRICES = QualifiedName("raw_data", "일별시세")
ORDER_ITEMS = QualifiedName("Sales", "Order Items")
DISCLOSURES = QualifiedName("raw_data", "공시목록")
#: The enum type of `공시목록.공시구분`; it must exist in the target before the first copy.
DISCLOSURE_KIND = QualifiedName("raw_data", "공시유형")
DISCLOSURE_KINDS = ("정기공시", "주요사항보고", "발행공시", "지분공시", "기타공시")

#: Written last, in the same transaction as the data: its presence means "fully seeded".
SEED_MARKER = QualifiedName("stagecopy_demo", "seeded")

STOCKS = 3_000
ORDER_ITEM_ROWS = 20_000
DISCLOSURE_ROWS = 5_000

_LOCK = sql.SQL("SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended('stagecopy-demo', 0))")

# --- seeding ---------------------------------------------------------------------------------

# Stock names are prefix + business + suffix; with these list lengths (20, 15, 10) the 3,000
# stock numbers g = 0..2999 map to 3,000 different names.
_CREATE_MASTER = sql.SQL(
    """
CREATE TABLE {master} (
  종목코드 text PRIMARY KEY,
  종목명 text NOT NULL,
  시장구분 text NOT NULL CHECK (시장구분 IN ('KOSPI', 'KOSDAQ', 'KONEX')),
  상장일 date,
  액면가 numeric(12,2),
  updated_at timestamptz NOT NULL
);
INSERT INTO {master} (종목코드, 종목명, 시장구분, 상장일, 액면가, updated_at)
SELECT lpad((5930 + g * 7)::text, 6, '0'),
       (ARRAY['삼성', '현대', '엘지', '에스케이', '한화', '롯데', '포스코', '신세계', '두산',
              '효성', '대한', '한국', '동양', '금호', '코오롱', '대림', '셀트리온', '카카오',
              '네이버', '아모레'])[1 + g % 20]
       || (ARRAY['전자', '화학', '제약', '건설', '증권', '바이오', '반도체', '에너지', '식품',
                 '통신', '중공업', '생명', '해운', '소재', '게임즈'])[1 + (g / 20) % 15]
       || (ARRAY['', '홀딩스', '우', '2우B', '엔터', '글로벌', '테크', '인베스트', '리츠',
                 '솔루션'])[1 + (g / 300) % 10],
       CASE WHEN (g * 7 + g / 20) % 10 < 3 THEN 'KOSPI'
            WHEN (g * 7 + g / 20) % 10 < 9 THEN 'KOSDAQ'
            ELSE 'KONEX' END,
       date '1975-06-11' + (g * 4513) % 17500,
       CASE WHEN g % 97 = 0 THEN NULL ELSE (ARRAY[100, 200, 500, 1000, 2500, 5000])[1 + g % 6] END,
       timestamptz '2024-01-02 09:00:00+09' + g * interval '1 minute'
FROM generate_series(0, {stocks} - 1) AS g
"""
)

# Trading days are weekdays counted back from the last Friday before today; k = 0 is that
# Friday. Prices follow a slow wave per stock with random daily noise.
_CREATE_PRICES = sql.SQL(
    """
CREATE TABLE {prices} (
  종목코드 text NOT NULL,
  거래일 date NOT NULL,
  시가 numeric,
  고가 numeric,
  저가 numeric,
  종가 numeric,
  거래량 bigint,
  updated_at timestamptz NOT NULL
);
INSERT INTO {prices} (종목코드, 거래일, 시가, 고가, 저가, 종가, 거래량, updated_at)
WITH grid AS (
  SELECT n % {stocks} AS s, {days} - 1 - n / {stocks} AS k, random() AS r1, random() AS r2
  FROM generate_series(0, {rows} - 1) AS n
), priced AS (
  SELECT s, k, r1, r2,
         round(((1000 + (s * 7919) % 90000) * (1.25 + 0.25 * sin(k / 20.0 + s)))::numeric, -1)
           AS close
  FROM grid
), opened AS (
  SELECT *, round((close * (0.98 + 0.04 * r1)::numeric), -1) AS open FROM priced
), last_friday AS (
  SELECT current_date - ((extract(isodow FROM current_date)::int + 1) % 7 + 1) AS day
)
SELECT lpad((5930 + s * 7)::text, 6, '0'),
       f.day - ((k / 5) * 7 + k % 5),
       open,
       greatest(open, close) + round(close * (r2 * 0.02)::numeric, -1),
       least(open, close) - round(close * (r1 * 0.02)::numeric, -1),
       close,
       100 + (r2 * 2000000)::bigint,
       ((f.day - ((k / 5) * 7 + k % 5)) + time '18:00') AT TIME ZONE 'Asia/Seoul'
FROM opened CROSS JOIN last_friday AS f;
ALTER TABLE {prices} ADD PRIMARY KEY (종목코드, 거래일);
CREATE INDEX ON {prices} (updated_at)
"""
)

# Notes cycle through the characters that break naive CSV/text handling.
_CREATE_ORDER_ITEMS = sql.SQL(
    r"""
CREATE SCHEMA IF NOT EXISTS {sales};
CREATE TABLE {items} (
  "Order ID" bigint PRIMARY KEY,
  "SKU" text NOT NULL,
  qty int NOT NULL,
  price numeric(10,2),
  note text,
  tags text[],
  meta jsonb,
  created_at timestamptz NOT NULL
);
INSERT INTO {items} ("Order ID", "SKU", qty, price, note, tags, meta, created_at)
SELECT 100000 + n,
       'SKU-' || lpad((n * 31 % 997)::text, 4, '0'),
       1 + n % 7,
       CASE WHEN n % 23 = 0 THEN NULL ELSE round((1000 + (n * 7919) % 500000) / 100.0, 2) END,
       CASE n % 8
         WHEN 0 THEN NULL
         WHEN 1 THEN E'문 앞에 놓아 주세요\t(부재 시 경비실)'
         WHEN 2 THEN E'첫 줄\n둘째 줄\n셋째 줄'
         WHEN 3 THEN 'He said "빨리 와 주세요" and left'
         WHEN 4 THEN E'백슬래시 \\ 와 탭\t그리고 CRLF\r\n끝'
         WHEN 5 THEN $$'작은따옴표', "큰따옴표", 쉼표; 세미콜론$$
         WHEN 6 THEN ''
         ELSE '주문 메모 #' || n END,
       CASE WHEN n % 13 = 0 THEN NULL
            WHEN n % 5 = 0 THEN ARRAY[]::text[]
            ELSE ARRAY['선물', 'tag ' || n % 4, E'탭\t포함', 'comma,"quote"', NULL] END,
       CASE WHEN n % 17 = 0 THEN NULL
            ELSE jsonb_build_object(
              'channel', (ARRAY['web', 'app', '전화주문'])[1 + n % 3],
              'coupon', n % 4 = 0,
              'lines', jsonb_build_array(n % 3, n % 5, 1.5),
              'memo', E'줄\n바꿈 "인용"') END,
       timestamptz '2024-03-01 00:00:00+09' + n * interval '37 seconds'
FROM generate_series(1, {rows}) AS n
"""
)

_CREATE_DISCLOSURES = sql.SQL(
    """
CREATE TABLE {disclosures} (
  접수번호 bigint PRIMARY KEY,
  종목코드 text NOT NULL,
  공시구분 {kind} NOT NULL,
  제목 text NOT NULL,
  접수일시 timestamptz NOT NULL
);
INSERT INTO {disclosures} (접수번호, 종목코드, 공시구분, 제목, 접수일시)
SELECT 20240101000000 + n,
       lpad((5930 + (n * 13 % {stocks}) * 7)::text, 6, '0'),
       (enum_range(NULL::{kind}))[1 + n % 5],
       (ARRAY['사업보고서', '분기보고서', '주요사항보고서(유상증자결정)', '증권발행실적보고서',
              '임원ㆍ주요주주특정증권등소유상황보고서', '기타경영사항(자율공시)'])[1 + n % 6],
       timestamptz '2024-01-02 07:30:00+09' + n * interval '53 minutes'
FROM generate_series(1, {rows}) AS n
"""
)

_CREATE_MARKER = sql.SQL(
    """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {marker} (large_rows bigint NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now());
INSERT INTO {marker} (large_rows) VALUES ({rows})
"""
)


def _create_enum(conn: psycopg.Connection, type_name: QualifiedName) -> None:
    """Create the disclosure enum type, or check that an existing one has the same labels."""
    row = conn.execute(
        "SELECT t.oid FROM pg_catalog.pg_type t "
        "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = %s AND t.typname = %s",
        (type_name.schema, type_name.name),
    ).fetchone()
    if row is None:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(type_name.schema))
        )
        conn.execute(
            sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
                type_name.identifier, sql.SQL(", ").join(map(sql.Literal, DISCLOSURE_KINDS))
            )
        )
        return
    labels = conn.execute(
        "SELECT enumlabel FROM pg_catalog.pg_enum WHERE enumtypid = %s ORDER BY enumsortorder",
        (row[0],),
    ).fetchall()
    if tuple(r[0] for r in labels) != DISCLOSURE_KINDS:
        raise SchemaMismatchError(
            f"type {type_name} exists with labels {[r[0] for r in labels]}, "
            f"not {list(DISCLOSURE_KINDS)}"
        )


def seed_source(url: str, *, large_rows: int = 300_000) -> None:
    """Create and fill the demo source tables, unless a previous call already did.

    Args:
        url: A libpq URL of the source database, as a role that may create schemas.
        large_rows: Rows of `raw_data.일별시세` (3,000 stocks x trading days).
    """
    if large_rows < 1:
        raise ValueError("large_rows must be at least 1")
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(_LOCK)
        if catalog.relation_oid(conn, SEED_MARKER) is not None:
            row = conn.execute(
                sql.SQL("SELECT large_rows FROM {}").format(SEED_MARKER.identifier)
            ).fetchone()
            log.info("demo source already seeded (%s price rows); nothing to do", row and row[0])
            return
        _create_tables(conn, large_rows)
    with psycopg.connect(url, autocommit=True) as conn:
        for table in (MASTER, PRICES, ORDER_ITEMS, DISCLOSURES):
            conn.execute(sql.SQL("ANALYZE {}").format(table.identifier))
    log.info("seeded the demo source in %.1fs", time.perf_counter() - started)


def _create_tables(conn: psycopg.Connection, large_rows: int) -> None:
    """Create and fill the demo tables, the enum type and the seed marker (in one transaction)."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier("raw_data")))
    conn.execute(sql.SQL("SELECT setseed(0.42)"))  # the same prices on every machine
    stocks = sql.Literal(STOCKS)
    days = -(-large_rows // STOCKS)
    steps: list[tuple[QualifiedName, sql.Composed]] = [
        (MASTER, _CREATE_MASTER.format(master=MASTER.identifier, stocks=stocks)),
        (
            PRICES,
            _CREATE_PRICES.format(
                prices=PRICES.identifier,
                stocks=stocks,
                days=sql.Literal(days),
                rows=sql.Literal(large_rows),
            ),
        ),
        (
            ORDER_ITEMS,
            _CREATE_ORDER_ITEMS.format(
                sales=sql.Identifier(ORDER_ITEMS.schema),
                items=ORDER_ITEMS.identifier,
                rows=sql.Literal(ORDER_ITEM_ROWS),
            ),
        ),
    ]
    for table, statement in steps:
        step_started = time.perf_counter()
        conn.execute(statement)
        log.info("seeded %s in %.1fs", table, time.perf_counter() - step_started)
    _create_enum(conn, DISCLOSURE_KIND)
    conn.execute(
        _CREATE_DISCLOSURES.format(
            disclosures=DISCLOSURES.identifier,
            kind=DISCLOSURE_KIND.identifier,
            stocks=stocks,
            rows=sql.Literal(DISCLOSURE_ROWS),
        )
    )
    conn.execute(
        _CREATE_MARKER.format(
            schema=sql.Identifier(SEED_MARKER.schema),
            marker=SEED_MARKER.identifier,
            rows=sql.Literal(large_rows),
        )
    )


def seed_target(url: str) -> None:
    """Create what the target needs before the first copy: the enum type of `공시목록`.

    Idempotent. Raises :class:`~stagecopy_dagster.errors.SchemaMismatchError` when the type
    exists with other labels.
    """
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(_LOCK)
        _create_enum(conn, DISCLOSURE_KIND)


# --- changing ----------------------------------------------------------------------------------

_TOUCH = sql.SQL(
    r"""
UPDATE {master}
   SET 액면가 = CASE WHEN 액면가 >= 5000 THEN 100 ELSE 액면가 * 2 END, updated_at = now()
 WHERE random() < 0.01;
INSERT INTO {master} (종목코드, 종목명, 시장구분, 상장일, 액면가, updated_at)
SELECT lpad((m.top + 7 * i)::text, 6, '0'), '신규상장' || (m.top + 7 * i), 'KOSDAQ',
       current_date, 500, now()
  FROM (SELECT max(종목코드::int) AS top FROM {master}) AS m, generate_series(1, 3) AS i;

UPDATE {prices}
   SET 종가 = 종가 + 10, 고가 = greatest(고가, 종가 + 10), 거래량 = 거래량 + 1, updated_at = now()
 WHERE random() < 0.01;
INSERT INTO {prices} (종목코드, 거래일, 시가, 고가, 저가, 종가, 거래량, updated_at)
SELECT 종목코드, 거래일 + 1, 종가, 종가 + 10, 종가 - 10, 종가, 1000, now()
  FROM {prices} WHERE 거래일 = (SELECT max(거래일) FROM {prices})
 ORDER BY 종목코드 LIMIT 5
ON CONFLICT DO NOTHING;

UPDATE {items}
   SET qty = qty + 1, note = coalesce(note, '') || E'\n(수정됨)',
       meta = coalesce(meta, jsonb_build_object()) || jsonb_build_object('edited', true)
 WHERE random() < 0.01;
INSERT INTO {items} ("Order ID", "SKU", qty, price, note, tags, meta, created_at)
SELECT m.top + i, 'SKU-NEW', i, 9900.00, E'새 주문\t"추가"', ARRAY['신규'], NULL, now()
  FROM (SELECT max("Order ID") AS top FROM {items}) AS m, generate_series(1, 5) AS i;
DELETE FROM {items}
 WHERE "Order ID" IN (SELECT "Order ID" FROM {items} ORDER BY random() LIMIT 3);

UPDATE {disclosures} SET 제목 = 제목 || ' [정정]' WHERE random() < 0.01;
INSERT INTO {disclosures} (접수번호, 종목코드, 공시구분, 제목, 접수일시)
SELECT m.top + i, '005930', '기타공시', '기타경영사항(자율공시) 신규 ' || i, now()
  FROM (SELECT max(접수번호) AS top FROM {disclosures}) AS m, generate_series(1, 3) AS i
"""
)


def touch_source(url: str) -> None:
    """Change the demo source a little: ~1% of each table updated, a few rows inserted.

    Updated and inserted rows get `updated_at = now()`, so an incremental run picks them up;
    three order items are deleted, which only a `sync` run carries to the target.
    """
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(_LOCK)
        conn.execute(
            _TOUCH.format(
                master=MASTER.identifier,
                prices=PRICES.identifier,
                items=ORDER_ITEMS.identifier,
                disclosures=DISCLOSURES.identifier,
            )
        )
    log.info("touched the demo source in %.1fs", time.perf_counter() - started)
