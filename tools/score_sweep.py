"""Detection metrics of trained runs for a grid of scoring options, without retraining.

    python tools/score_sweep.py RUN_DIR... --data DIR [--grid score.KEY=V1,V2,...]...
        [--heldout N1,N2,...] [--results FILE]
    python tools/score_sweep.py --table FILE [--runs-matching TEXT] [--by-commit]

Each combination of the ``--grid`` values (their product) rescores every run as
``ssad evaluate RUN DATA --set ...`` would: the good-image statistics and thresholds are
recomputed from the run's held-out images, then image AUROC, pixel AUROC and AUPRO are measured
on ``DATA``'s test images at the working resolution. One JSON row per run and combination is
printed and, with ``--results``, appended to that JSON-lines file; ``--heldout N1,N2`` adds
an axis: statistics and thresholds fitted on only the first N held-out images (how many good
images a scoring needs). A row also carries the run's steps and the last repair-probe ratios
of its training (``history.json``). ``--table`` prints such a file as a markdown table: one
line per combination of settings, per data set the mean of each metric over the runs (seeds)
and, with several runs, its spread (max - min) and their number; ``--by-commit`` splits the
lines by the commit that scored them (the same runs rescored by two versions of the scoring
code).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.quality import append_row, git_commit, parse_set  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="run directories")
    p.add_argument("--data", type=Path, help="MVTec-layout data set folder")
    p.add_argument("--table", type=Path, help="print this results file as a markdown table")
    p.add_argument(
        "--runs-matching", default="", help="--table: only runs whose path matches this regex"
    )
    p.add_argument(
        "--repair", action="store_true", help="--table: the runs' repair-probe ratios instead"
    )
    p.add_argument("--by-commit", action="store_true", help="--table: a line per commit too")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2",
        help="score.* option and its values, e.g. score.image=max,mean_max (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--heldout", default="", metavar="N1,N2",
        help="fit the statistics and thresholds on only the first N held-out images (a grid axis)",
    )  # fmt: skip
    p.add_argument("--results", type=Path, help="JSON-lines file to append the rows to")
    args = p.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for line in args.table.read_text().splitlines() if line]
        chosen = [r for r in rows if re.search(args.runs_matching, r["run"])]
        print(repair_table(chosen) if args.repair else table(chosen, args.by_commit))
        return rows
    if not args.runs or args.data is None:
        p.error("give RUN_DIR... and --data (or --table FILE)")
    axes = []
    for text in args.grid:
        key, values = next(iter(parse_set(p, text).items()))
        values = values if isinstance(values, list) else [values]
        axes.append([(key, v) for v in values])
    if args.heldout:
        axes.append([("heldout", int(n)) for n in args.heldout.split(",")])

    from ssad.calibration import calibrate_on_good
    from ssad.detection import Detector, load_detector
    from ssad.errors import ConfigError
    from ssad.run import RunDir
    from ssad.scan import collect

    rows = []
    for run in args.runs:
        config = RunDir(run).read_config().to_dict()
        history = RunDir(run).read_history()
        heldout = RunDir(run).read_heldout() if args.heldout else []
        for combination in itertools.product(*axes):
            settings = dict(combination)
            overrides = {k: v for k, v in settings.items() if k != "heldout"}
            try:
                detector = load_detector([run], score_overrides=overrides)
            except ConfigError as e:  # e.g. several map terms without normalisation
                print(f"skipped {settings}: {e}", file=sys.stderr)
                continue
            if "heldout" in settings:  # statistics and thresholds from fewer good images
                detector = Detector(detector.model, detector.config)
                detector.calibration, detector.statistics = calibrate_on_good(
                    detector, heldout[: settings["heldout"]]
                )
            found = collect(detector, args.data)[0].summary()
            row = {
                "run": str(run),
                "dataset": args.data.resolve().name,
                "objective": config["train"]["objective"],
                "seed": config["train"]["seed"],
                "schedule": config["train"].get("schedule", "constant"),  # older runs: constant
                "steps": history[-1]["step"] if history else None,
                "repair": {
                    k.removeprefix("repair_"): v
                    for k, v in (history[-1] if history else {}).items()
                    if k.startswith("repair_")
                },
                "settings": settings,
                "normalize": detector.calibration.normalize,
                "image_normalize": detector.calibration.image_normalize,
                **{k: _round(found[k]) for k in ("image_auroc", "pixel_auroc", "aupro")},
                "commit": git_commit(),
            }
            print(json.dumps(row), flush=True)
            if args.results:
                append_row(args.results, row)
            rows.append(row)
    return rows


def table(rows: list[dict], by_commit: bool = False) -> str:
    """Markdown: settings (and commits) x data sets, each metric's mean over runs (spread,
    runs). Data sets named alike but for a trailing number (``brick0``, ``brick1``: demo data
    made with different seeds) are one column."""
    datasets = sorted({_family(r["dataset"]) for r in rows})
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        key = ", ".join(f"{k.removeprefix('score.')}={v}" for k, v in sorted(r["settings"].items()))
        key = f"{r['commit']}: {key or 'as trained'}" if by_commit else key
        groups.setdefault(key, {}).setdefault(_family(r["dataset"]), []).append(r)
    metrics = ("image_auroc", "pixel_auroc", "aupro")
    head = ["settings"] + [f"{d} {m.replace('_', ' ')}" for d in datasets for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, by_dataset in groups.items():
        cells = [key]
        for d in datasets:
            for m in metrics:
                values = [r[m] for r in by_dataset.get(d, []) if r[m] is not None]
                if not values:
                    cells.append("–")
                elif len(values) == 1:
                    cells.append(f"{values[0]:.3f}")
                else:
                    spread = max(values) - min(values)
                    cells.append(
                        f"{sum(values) / len(values):.3f} ±{spread / 2:.3f} ({len(values)})"
                    )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def repair_table(rows: list[dict]) -> str:
    """Markdown: one line per run, the repair-probe ratios at the end of its training."""
    runs = {r["run"]: r for r in rows if r.get("repair")}
    kinds = sorted({k for r in runs.values() for k in r["repair"]})
    lines = ["| run | data set | steps | " + " | ".join(kinds) + " |"]
    lines.append("|" + "---|" * (3 + len(kinds)))
    for run, r in runs.items():
        cells = [f"{r['repair'][k]:.3f}" if k in r["repair"] else "–" for k in kinds]
        lines.append(f"| {run} | {r['dataset']} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _family(dataset: str) -> str:
    return re.sub(r"(?<=[a-z])\d+$", "", dataset)


def _round(x):
    return None if x is None else round(x, 4)


if __name__ == "__main__":
    main()
