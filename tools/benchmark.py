"""Benchmarks: ``python tools/benchmark.py SECTION [options]``.

Each section prints one JSON object (``quality-table``: markdown) as its last line; ``--out
FILE`` also saves it. Sections live in ``tools/bench/<section>.py`` and expose
``main(argv) -> dict | str``.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

SECTIONS = {
    "pipeline": "pipeline",
    "inference": "inference",
    "train": "train",
    "eval-memory": "eval_memory",
    "quality": "quality",
    "quality-table": "quality_table",
    "quality-curve": "quality_curve",
    "export-parity": "export_parity",
    "corruption-area": "corruption_area",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SECTIONS:
        print(__doc__.strip(), file=sys.stderr)
        print(f"sections: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    section, rest = argv[0], argv[1:]
    out = None
    if "--out" in rest:
        i = rest.index("--out")
        out, rest = rest[i + 1], rest[:i] + rest[i + 2 :]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    result = importlib.import_module(f"bench.{SECTIONS[section]}").main(rest)
    text = result if isinstance(result, str) else json.dumps(result)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
