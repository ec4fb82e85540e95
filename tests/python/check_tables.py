"""Check that pyarrow, pandas and polars read a run's tables with the types that
docs/tables.md documents.

usage: python check_tables.py RUN_DIR [docs/tables.md]

For every `NAME.parquet` section of docs/tables.md whose file exists in RUN_DIR (or
RUN_DIR/score for `score/NAME.parquet`), every documented column must be present
with the documented type and nullability; pandas and polars must read the same
rows and columns. Exits non-zero, naming each problem, when anything differs.
"""

import re
import sys
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

SCALAR = {
    "string": pa.string(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}


def doc_type(text):
    """(arrow type, nullable) of a documented type such as 'list<uint32>'."""
    nullable = text.endswith(", nullable")
    text = text.removesuffix(", nullable").strip()
    m = re.fullmatch(r"list<(\w+)>", text)
    if m:
        return pa.list_(SCALAR[m.group(1)]), nullable
    return SCALAR[text], nullable


def documented(tables_md):
    """{'NAME.parquet' or 'score/NAME.parquet': {column: (type, nullable)}}."""
    out, current = {}, None
    for line in tables_md.read_text().splitlines():
        head = re.match(r"^###\s+`([\w/]+\.parquet)`", line)
        if head:
            current = out.setdefault(head.group(1), {})
            continue
        if line.startswith("#"):
            current = None
            continue
        row = re.match(r"^\|\s*(`[^|]*`)\s*\|\s*([^|]+?)\s*\|", line)
        if current is None or not row:
            continue
        names = re.findall(r"`(\w+)`", row.group(1))
        types = row.group(2)
        if types.endswith(", nullable"):
            parts = [types]
        else:
            parts = [t.strip() for t in types.split(",")]
        if len(parts) == 1:
            parts = parts * len(names)
        if len(parts) != len(names):
            continue
        try:
            for n, t in zip(names, parts):
                current[n] = doc_type(t)
        except KeyError:
            continue  # a prose row, not a column
    return out


def same_type(actual, expected):
    if pa.types.is_list(expected):
        return pa.types.is_list(actual) and actual.value_type == expected.value_type
    if expected == pa.string():
        return actual in (pa.string(), pa.large_string())
    return actual == expected


def check(run, docs):
    problems, checked = [], 0
    for name, columns in sorted(docs.items()):
        path = run / name
        if not path.exists():
            continue
        checked += 1
        table = pq.read_table(path)
        schema = table.schema
        for col, (expected, nullable) in columns.items():
            if col not in schema.names:
                problems.append(f"{path}: documented column '{col}' is missing")
                continue
            field = schema.field(col)
            if not same_type(field.type, expected):
                problems.append(
                    f"{path}: column '{col}' is {field.type}, documented {expected}"
                )
            if field.nullable != nullable:
                problems.append(
                    f"{path}: column '{col}' nullable={field.nullable}, documented {nullable}"
                )
        frame = pd.read_parquet(path)
        if list(frame.columns) != schema.names or len(frame) != table.num_rows:
            problems.append(f"{path}: pandas reads {frame.shape}, pyarrow {table.shape}")
        polars = pl.read_parquet(path)
        if polars.columns != schema.names or polars.height != table.num_rows:
            problems.append(f"{path}: polars reads {polars.shape}, pyarrow {table.shape}")
        print(f"ok   {name}: {table.num_rows} rows, {len(schema.names)} columns")
    return checked, problems


def main():
    run = Path(sys.argv[1])
    tables_md = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parents[2] / "docs" / "tables.md"
    checked, problems = check(run, documented(tables_md))
    for p in problems:
        print("FAIL", p)
    if checked == 0:
        print(f"FAIL no documented table found in {run}")
        sys.exit(1)
    print(f"{checked} tables checked with pyarrow {pa.__version__}, pandas {pd.__version__}, polars {pl.__version__}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
