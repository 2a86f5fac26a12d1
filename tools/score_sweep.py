"""Detection metrics of trained runs for a grid of scoring options, without retraining.

    python tools/score_sweep.py RUN_DIR... --data DIR [--grid score.KEY=V1,V2,...]...
        [--results FILE]

Each combination of the ``--grid`` values (their product) rescores every run as
``ssad evaluate RUN DATA --set ...`` would: the good-image statistics and thresholds are
recomputed from the run's held-out images, then image AUROC, pixel AUROC and AUPRO are measured
on ``DATA``'s test images at the working resolution. One JSON row per run and combination is
printed and, with ``--results``, appended to that JSON-lines file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.quality import append_row, git_commit, parse_set  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("--data", required=True, type=Path, help="MVTec-layout data set folder")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2",
        help="score.* option and its values, e.g. score.image=max,mean_max (repeatable)",
    )  # fmt: skip
    p.add_argument("--results", type=Path, help="JSON-lines file to append the rows to")
    args = p.parse_args(argv)
    axes = []
    for text in args.grid:
        key, values = next(iter(parse_set(p, text).items()))
        values = values if isinstance(values, list) else [values]
        axes.append([(key, v) for v in values])

    from ssad.detection import collect, load_detector

    rows = []
    for run in args.runs:
        config = json.loads((run / "config.json").read_text())
        for combination in itertools.product(*axes):
            settings = dict(combination)
            detector = load_detector([run], score_overrides=settings)
            found = collect(detector, args.data)
            row = {
                "run": str(run),
                "dataset": args.data.resolve().name,
                "objective": config["train"]["objective"],
                "seed": config["train"]["seed"],
                "settings": settings,
                "normalize": detector.calibration.get("normalize"),
                **{k: _round(found[k]) for k in ("image_auroc", "pixel_auroc", "aupro")},
                "commit": git_commit(),
            }
            print(json.dumps(row), flush=True)
            if args.results:
                append_row(args.results, row)
            rows.append(row)
    return rows


def _round(x):
    return None if x is None else round(x, 4)


if __name__ == "__main__":
    main()
