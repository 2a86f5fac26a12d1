"""Section ``quality-table``: the rows of a ``quality`` results file as a markdown table.

    python tools/benchmark.py quality-table [--results FILE]

Rows keep the file's order; a metric that does not apply (pixel metrics without masks) is "–".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.quality import DEFAULT_RESULTS

COLUMNS = {  # row key -> column title
    "dataset": "data set",
    "variant": "variant",
    "preset": "preset",
    "resolution": "size (px)",
    "mixed_precision": "precision",
    "overrides": "overrides",
    "minutes": "minutes",
    "steps": "steps",
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "seconds_per_image": "s / image",
    "commit": "commit",
}
TEXT = ("dataset", "variant", "preset", "mixed_precision", "overrides", "commit")
OPTIONAL = (
    "overrides",
)  # rows written before the key existed lack it  # left-aligned; the others are numbers
DECIMALS3 = ("image_auroc", "pixel_auroc", "aupro", "seconds_per_image")


def main(argv: list[str]) -> str:
    p = argparse.ArgumentParser(prog="benchmark.py quality-table", description=__doc__)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON-lines file")
    return render(read_rows(p.parse_args(argv).results))


def read_rows(path: Path) -> list[dict]:
    """The JSON objects of the lines of ``path``; ``DataError`` naming the file and line."""
    from ssad.errors import DataError

    if not path.is_file():
        raise DataError(f"{path}: results file not found (run the quality section first)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not JSON ({e})") from None
        missing = [
            k for k in COLUMNS if k not in OPTIONAL and (not isinstance(row, dict) or k not in row)
        ]
        if missing:
            raise DataError(f"{path}:{number}: a result row lacks {', '.join(missing)}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no result rows")
    return rows


def render(rows: list[dict]) -> str:
    """A markdown table of ``rows``, one line per row."""
    align = ["---" if k in TEXT else "---:" for k in COLUMNS]
    lines = [_line(COLUMNS.values()), _line(align)]
    lines += [_line(_cell(k, row.get(k)) for k in COLUMNS) for row in rows]
    return "\n".join(lines)


def _line(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(key: str, value) -> str:
    if value is None or value == {}:
        return "–"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(k, v)}" for k, v in value.items())
    if key in DECIMALS3:
        return f"{value:.3f}"
    return f"{value:g}" if isinstance(value, float) else str(value)
